"""Options: a config field that is a flag, with its help, choices and bounds beside it, and the one
check of them all.

A field made with `option(...)` is a command-line flag of the tool that reads the config
(tools.flags builds the parser from the fields; nothing is written twice). A plain field is
internal: set by code, never a flag. A config that contains a run (compare, demo) holds a template
config (`nested`) whose fields are flags of its tool too, and derives each run from it with
dataclasses.replace.

`check(config)` validates every option's choices, bounds and distinct values from the field's
metadata, whether the config came from flags or was built in code; a config's __post_init__ calls
it and then checks only what ties several fields together.
"""

import dataclasses

from pipeline import errors


def option(
    default=dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    aliases: tuple[str, ...] = (),
    choices=None,
    parse=None,
    metavar: str | None = None,
    group: str | None = None,
    positional: bool = False,
    nargs: str | None = None,
    default_factory=dataclasses.MISSING,
    show_default: bool = True,
    minimum: float | None = None,
    positive: bool = False,
    distinct: bool = False,
    elements=None,
):
    """A config field that is also a flag.

    flag: its name (default --field-name; for a bool, the flag that flips the default: --name, or
    --no-name when the default is True); aliases: older names that still work; choices: the valid
    values; parse: text -> value, where the field's type alone does not say how (e.g. a number or
    "auto"); group: fields of one mutually exclusive group; positional: an argument, not a flag
    (nargs as argparse takes it). minimum: the least value allowed; positive: above zero (a
    number; a word such as "auto" passes); distinct: a list of distinct values, each one of
    `elements` when given. None is always allowed: it leaves the value to a recipe or a default.
    """
    metadata = {
        "help": help,
        "flag": flag,
        "aliases": tuple(aliases),
        "choices": choices,
        "parse": parse,
        "metavar": metavar,
        "group": group,
        "positional": positional,
        "nargs": nargs,
        "show_default": show_default,
        "minimum": minimum,
        "positive": positive,
        "distinct": distinct,
        "elements": elements,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def nested(
    default_factory,
    *,
    exclude: tuple[str, ...] = (),
    include: tuple[str, ...] | None = None,
    flags: dict | None = None,
):
    """A config field holding another config (a run's template) whose options are this tool's flags
    too.

    exclude: the template's fields this config sets itself for every run it derives (records,
    logdir, ...); include: only these of the template's fields are flags (the rest keep the
    template's values); flags: other names for some of them ({field: "--flag"}).
    """
    return dataclasses.field(
        default_factory=default_factory,
        metadata={
            "nested": True,
            "exclude": tuple(exclude),
            "include": include,
            "flags": dict(flags or {}),
        },
    )


def flag_name(field: dataclasses.Field, default=dataclasses.MISSING) -> str:
    """The flag of a field: its metadata's, else --field-name (--no-field-name for a bool that
    defaults to True)."""
    if field.metadata.get("flag"):
        return field.metadata["flag"]
    name = field.name.replace("_", "-")
    default = field.default if default is dataclasses.MISSING else default
    return f"--no-{name}" if default is True else f"--{name}"


def check(config) -> None:
    """Raises a one-line UserError naming the flag of the first option whose value its metadata
    refuses: a choice not among its choices, a number under its minimum or not positive, a list
    with repeats or values not among its elements."""
    for field in dataclasses.fields(config):
        metadata, value = field.metadata, getattr(config, field.name)
        if "help" not in metadata or value is None:
            continue
        flag = flag_name(field)
        choices = metadata["choices"]
        if choices is not None and value not in choices:
            raise errors.UserError(
                f"{flag} must be one of {', '.join(map(str, choices))}, got {value!r}"
            )
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and metadata["positive"] and value <= 0:
            raise errors.UserError(f"{flag} must be positive, got {value}")
        if number and metadata["minimum"] is not None and value < metadata["minimum"]:
            raise errors.UserError(f"{flag} must be at least {metadata['minimum']:g}, got {value}")
        if metadata["distinct"]:
            distinct(flag, value, metadata["elements"])


def distinct(flag: str, values, allowed=None) -> None:
    """A list of distinct values, each one of `allowed` when given, or a one-line UserError."""
    if values is not None and (
        not values
        or len(set(values)) != len(values)
        or (allowed is not None and not set(values) <= set(allowed))
    ):
        known = f" of {', '.join(map(str, allowed))}" if allowed is not None else ""
        raise errors.UserError(
            f"{flag} must list distinct values{known}, got {','.join(map(str, values))}"
        )


def check_local_output(flag: str, path: str) -> None:
    """Output folders are written with local file operations (atomic renames, fsync, shutil): no
    URLs."""
    if "://" in path:
        raise errors.UserError(
            f"{flag} {path}: write the run to a local or shared-filesystem path (a bucket can be "
            "mounted with gcsfuse or mountpoint-s3); only --records may be a URL"
        )


def size_or_none(text: str) -> int | None:
    """--input-size: pixels, or 0 for the backbone's own."""
    return int(text) or None


def number_or_auto(text: str) -> float | str:
    """--learning-rate: a number, or auto."""
    return text if text == "auto" else float(text)
