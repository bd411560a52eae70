"""Branches by name: what each branch of a records set is, which family it belongs to, and how a
--branches list picks them.

A records set's branches are named in its manifest, in order:

    original, q10, ..., q100        the JPEG ladder (family `ladder`): the photo, its re-encodings
    object                          the object crop (family `object`), see pipeline.offline.views
    part1, ..., partK               the part crops inside it (family `parts`)
    hflip                           the mirrored photo (family `hflip`)
    tcm                             the content-adaptive compression (family `tcm`),
                                    see pipeline.offline.tcm

A --branches list names branches (`original,object`), families (`ladder,object`) or, as before,
branch indices (`0`), in any mix; it resolves to indices in the records' order. Nothing here reads a
quality to know what a branch is: only the JPEG names `q<quality>` carry one (quality()).
"""

import re

from pipeline import errors

ORIGINAL = "original"
LADDER = "ladder"
OBJECT = "object"
PARTS = "parts"
HFLIP = "hflip"
TCM = "tcm"
_QUALITY_NAME = re.compile(r"q(\d+)")
_PART_NAME = re.compile(r"part(\d+)")


def ladder_names(qualities) -> tuple[str, ...]:
    """The JPEG ladder's branch names: the original, then one per quality."""
    return (ORIGINAL,) + tuple(f"q{int(quality)}" for quality in qualities)


def quality(name: str) -> int | None:
    """The JPEG quality of a ladder re-encoding's branch (q30 -> 30); None for any other branch."""
    match = _QUALITY_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def family(name: str) -> str:
    """The family of a branch: ladder for the original and its re-encodings, parts for every part
    crop, else the branch's own name (object, hflip)."""
    if name == ORIGINAL or quality(name) is not None:
        return LADDER
    if _PART_NAME.fullmatch(name):
        return PARTS
    return name


def families(names) -> dict[str, tuple[int, ...]]:
    """{family: the positions of its branches in names}, families in order of first appearance."""
    grouped: dict[str, list[int]] = {}
    for position, name in enumerate(names):
        grouped.setdefault(family(name), []).append(position)
    return {key: tuple(positions) for key, positions in grouped.items()}


def family_ids(names) -> tuple[int, ...]:
    """Each branch's family as a number, in order of first appearance (0, 0, ..., 1, 2, 2, ...)."""
    keys = list(families(names))
    return tuple(keys.index(family(name)) for name in names)


def resolve(tokens, names) -> tuple[int, ...]:
    """The positions in names (a records set's branch names) that a --branches list picks, in the
    records' order; None picks every branch.

    A token is a branch name, a family name or an index; an unknown one fails naming the records'
    branches and families.
    """
    names = tuple(names)
    if tokens is None:
        return tuple(range(len(names)))
    grouped = families(names)
    picked: set[int] = set()
    for token in tokens:
        text = str(token).strip()
        if text.isdigit():
            index = int(text)
            if not 0 <= index < len(names):
                raise errors.UserError(
                    f"--branches {text}: the records hold branches 0..{len(names) - 1} "
                    f"({', '.join(names)})"
                )
            picked.add(index)
        elif text in names:
            picked.add(names.index(text))
        elif text in grouped:
            picked.update(grouped[text])
        else:
            raise errors.UserError(
                f"--branches {text}: no such branch or family in the records; branches: "
                f"{', '.join(names)}; families: {', '.join(grouped)}"
            )
    return tuple(sorted(picked))


_FAMILY_ORDER = (LADDER, OBJECT, PARTS, HFLIP, TCM)


def order(name: str) -> tuple:
    """A sort key that lists branches as records hold them (the ladder by quality, the object, the
    parts by number, the mirror), whatever order they come in (JSON keeps keys sorted as text)."""
    kind = family(name)
    rank = _FAMILY_ORDER.index(kind) if kind in _FAMILY_ORDER else len(_FAMILY_ORDER)
    part = _PART_NAME.fullmatch(name)
    number = quality(name) if kind == LADDER else int(part.group(1)) if part else 0
    return (rank, -1 if name == ORIGINAL else number or 0, name)


def parse_sets(text: str) -> tuple[tuple[str, ...], ...]:
    """--branch-sets "ladder;original,object;ladder,object" -> one tuple of tokens per set."""
    sets = tuple(
        tuple(token.strip() for token in part.split(",") if token.strip())
        for part in text.split(";")
        if part.strip()
    )
    if not sets:
        raise ValueError("expected branch sets separated by ';', e.g. ladder;original,object")
    return sets


def set_label(tokens) -> str:
    """The name of a branch set in arm keys and tables: its tokens as given, comma-separated."""
    return ",".join(str(token) for token in tokens)
