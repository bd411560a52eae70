"""Branches by name: what each branch of a records set is, which family it belongs to, and how a
--branches list picks them.

A records set's branches are named in its manifest, in order:

    original, q10, ..., q100        the JPEG ladder (family `ladder`, or `jpeg`): the photo, its
                                    re-encodings
    webp10, ..., avif90, ...        another codec's re-encodings, <codec><quality> (one family per
                                    codec: jpeg2000, webp, avif), see pipeline.offline.codecs
    object                          the object crop (family `object`), see pipeline.offline.views
    part1, ..., partK               the part crops inside it (family `parts`)
    hflip                           the mirrored photo (family `hflip`)
    tcm                             the content-adaptive compression (family `tcm`),
                                    see pipeline.offline.tcm

A --branches list names branches (`original,object`), families (`ladder,object`) or, as before,
branch indices (`0`), in any mix; it resolves to indices in the records' order. A codec is a ladder
as JPEG's is: its token (`jpeg`, `webp`, ...) picks the original and the codec's re-encodings, and
in a set without JPEG re-encodings the original counts in the family of the first other codec's.
Nothing here reads a quality to know what a branch is: only the codecs' names carry one (coded()).
"""

import re

from pipeline import errors

ORIGINAL = "original"
LADDER = "ladder"
OBJECT = "object"
PARTS = "parts"
HFLIP = "hflip"
TCM = "tcm"
JPEG = "jpeg"  # the ladder's codec: `jpeg` names the ladder family wherever branches are picked
# The codecs whose re-encodings make ladders (--codecs): JPEG's through TensorFlow, the others
# through Pillow (pipeline.offline.codecs).
CODECS = (JPEG, "jpeg2000", "webp", "avif")
OTHER_CODECS = CODECS[1:]
_QUALITY_NAME = re.compile(r"q(\d+)")
_CODED_NAME = re.compile(rf"({'|'.join(OTHER_CODECS)})(\d+)")
_PART_NAME = re.compile(r"part(\d+)")


def ladder_names(qualities, codecs=()) -> tuple[str, ...]:
    """The ladders' branch names: the original, one per JPEG quality (q30), then one per quality of
    each other codec, given as ((codec, qualities), ...) (webp30)."""
    jpeg = tuple(f"q{int(quality)}" for quality in qualities)
    others = tuple(f"{codec}{int(quality)}" for codec, values in codecs for quality in values)
    return (ORIGINAL,) + jpeg + others


def quality(name: str) -> int | None:
    """The JPEG quality of a ladder re-encoding's branch (q30 -> 30); None for any other branch."""
    match = _QUALITY_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def coded(name: str) -> tuple[str, int] | None:
    """(codec, quality) of any codec's re-encoding (q30 -> (jpeg, 30), webp30 -> (webp, 30)); None
    for the original and the views."""
    if quality(name) is not None:
        return JPEG, quality(name)
    match = _CODED_NAME.fullmatch(name)
    return (match.group(1), int(match.group(2))) if match else None


def other_codecs(names) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """((codec, qualities), ...) of the codecs other than JPEG among names, in their order: what
    ladder_names made them from."""
    ladders: dict[str, list[int]] = {}
    for name in names:
        codec, value = coded(name) or (JPEG, 0)
        if codec != JPEG:
            ladders.setdefault(codec, []).append(value)
    return tuple((codec, tuple(values)) for codec, values in ladders.items())


def family(name: str) -> str:
    """The family of a branch: ladder for the original and its JPEG re-encodings, the codec for
    another codec's, parts for every part crop, else the branch's own name (object, hflip)."""
    if name == ORIGINAL or quality(name) is not None:
        return LADDER
    if match := _CODED_NAME.fullmatch(name):
        return match.group(1)
    if _PART_NAME.fullmatch(name):
        return PARTS
    return name


def families(names) -> dict[str, tuple[int, ...]]:
    """{family: the positions of its branches in names}, families in order of first appearance.

    The original is its codec's photo: beside JPEG re-encodings (or no re-encoding) it is in the
    ladder, and beside only other codecs' it is in the first of them, so that `webp` alone is one
    family, as `jpeg` alone is."""
    kinds = [family(name) for name in names]
    others = [kind for kind in kinds if kind in OTHER_CODECS]
    if ORIGINAL in names and kinds.count(LADDER) == 1 and others:
        kinds[list(names).index(ORIGINAL)] = others[0]
    grouped: dict[str, list[int]] = {}
    for position, kind in enumerate(kinds):
        grouped.setdefault(kind, []).append(position)
    return {key: tuple(positions) for key, positions in grouped.items()}


def family_ids(names) -> tuple[int, ...]:
    """Each branch's family as a number, in order of first appearance (0, 0, ..., 1, 2, 2, ...)."""
    ids = [0] * len(names)
    for number, positions in enumerate(families(names).values()):
        for position in positions:
            ids[position] = number
    return tuple(ids)


def resolve(tokens, names) -> tuple[int, ...]:
    """The positions in names (a records set's branch names) that a --branches list picks, in the
    records' order; None picks every branch.

    A token is a branch name, a family name or an index; a codec (jpeg, webp, ...) picks its
    ladder: the original and the codec's re-encodings. An unknown token fails naming the records'
    branches and families.
    """
    names = tuple(names)
    if tokens is None:
        return tuple(range(len(names)))
    grouped = dict(families(names))
    for codec in CODECS:
        ladder = [
            position
            for position, name in enumerate(names)
            if name == ORIGINAL or (coded(name) or ("",))[0] == codec
        ]
        if len(ladder) > 1:
            grouped[LADDER if codec == JPEG else codec] = tuple(ladder)
    if LADDER in grouped:
        grouped[JPEG] = grouped[LADDER]
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
                f"{', '.join(names)}; families: {', '.join(families(names))}"
            )
    return tuple(sorted(picked))


_FAMILY_ORDER = (LADDER,) + OTHER_CODECS + (OBJECT, PARTS, HFLIP, TCM)


def order(name: str) -> tuple:
    """A sort key that lists branches as records hold them (the ladders by codec and quality, the
    object, the parts by number, the mirror), whatever order they come in (JSON keeps keys sorted
    as text)."""
    kind = family(name)
    rank = _FAMILY_ORDER.index(kind) if kind in _FAMILY_ORDER else len(_FAMILY_ORDER)
    part = _PART_NAME.fullmatch(name)
    number = coded(name)[1] if coded(name) else int(part.group(1)) if part else 0
    return (rank, -1 if name == ORIGINAL else number, name)


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
