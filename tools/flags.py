"""A tool's flags, generated from its config dataclass: the field's name, type, default, help and
choices.

    config = flags.parse(training_config.TrainConfig, argv, description="...")

Every field made with pipeline.config.option is a flag (or a positional argument); a nested config
(a run's template) contributes its own fields' flags, and the parsed values replace the template's.
A flag given on the command line overrides the field's default; nothing is written twice.
"""

import argparse
import dataclasses
import inspect
import types
import typing

from pipeline.config import options

flag_name = options.flag_name


def _base_type(annotation):
    """The type inside Optional[...] (X | None), or the annotation itself."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        return members[0] if len(members) == 1 else annotation
    return annotation


def _element_type(annotation):
    """The type of one value: of one element for a tuple field."""
    base = _base_type(annotation)
    return typing.get_args(base)[0] if typing.get_origin(base) is tuple else base


def _converter(annotation, parse):
    """text -> the field's value (a tuple field takes comma-separated values); a bad text is
    argparse's error."""
    base = _base_type(annotation)
    element = parse or _element_type(annotation)
    several = parse is None and typing.get_origin(base) is tuple

    def convert(text):
        try:
            if several:
                return tuple(element(part.strip()) for part in text.split(",") if part.strip())
            return element(text)
        except ValueError:
            expected = (
                (parse.__doc__ or "").split(":", 1)[-1].strip()
                if parse
                else ("comma-separated " if several else "") + getattr(element, "__name__", "value")
            )
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return convert


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _default(template, field: dataclasses.Field):
    """The field's default: a template instance's own value, else the class's default."""
    if not isinstance(template, type):
        return getattr(template, field.name)
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class _Flag:
    path: tuple[str, ...]  # field names from the top config down, e.g. ("training", "optimizer")
    field: dataclasses.Field
    renamed: str | None = None  # the flag, where the config names it otherwise than the field

    @property
    def dest(self) -> str:
        return ".".join(self.path)

    @property
    def required(self) -> bool:
        return (
            len(self.path) == 1
            and self.field.default is dataclasses.MISSING
            and self.field.default_factory is dataclasses.MISSING
        )


class Flags:
    """An argparse parser holding the flags of one or more configs, and building each config from
    its flags."""

    def __init__(self, description: str | None = None, raw_description: bool = False):
        # No abbreviations: --fusion must not pass for compare's --fusions (a different option).
        self.parser = argparse.ArgumentParser(
            description=description,
            allow_abbrev=False,
            formatter_class=argparse.RawDescriptionHelpFormatter
            if raw_description
            else argparse.HelpFormatter,
        )
        self._groups = {}
        self._flags = {}  # config class -> [_Flag]

    def add(self, config_class, *, flags: dict | None = None, group: str | None = None) -> "Flags":
        """Adds the options of config_class; flags renames some (field name -> flag), group puts
        them all in that mutually exclusive group."""
        self._flags[config_class] = self._add_fields(
            config_class, (), config_class, flags or {}, group
        )
        return self

    def _add_fields(self, config_class, prefix, template, renames, group, wanted=None) -> list:
        added = []
        for field in dataclasses.fields(config_class):
            if wanted is not None and not wanted(field.name):
                continue
            default = _default(template, field)
            metadata = field.metadata
            if metadata.get("nested"):
                exclude, include = metadata["exclude"], metadata["include"]
                added += self._add_fields(
                    field.type,
                    prefix + (field.name,),
                    default,
                    metadata.get("flags", {}),
                    None,
                    lambda name, exclude=exclude, include=include: (
                        name not in exclude and (include is None or name in include)
                    ),
                )
            elif "help" in metadata:  # else internal: set by code, not a flag
                flag = _Flag(prefix + (field.name,), field, renames.get(field.name))
                # A template's own value is its tool's default, worth saying even where the
                # field's usual default goes unsaid.
                told = prefix and default != _default(config_class, field)
                self._add_argument(flag, default, group or metadata["group"], told)
                added.append(flag)
        return added

    def _add_argument(self, flag: _Flag, default, group: str | None, told: bool = False) -> None:
        field, metadata, renamed = flag.field, flag.field.metadata, flag.renamed
        help_text = metadata["help"]
        if (
            (metadata["show_default"] or told)
            and default not in (None, "", (), dataclasses.MISSING)
            and not isinstance(default, bool)
        ):
            help_text += f" (default: {_shown(default)})".replace("%", "%%")
        target = self.parser
        if group:
            if group not in self._groups:
                self._groups[group] = self.parser.add_mutually_exclusive_group()
            target = self._groups[group]
        if metadata["positional"] and not renamed:
            target.add_argument(
                flag.dest,
                metavar=metadata["metavar"] or field.name.upper(),
                help=help_text,
                nargs=metadata["nargs"],
                type=_element_type(field.type),
            )
            return
        names = [renamed or flag_name(field, default), *metadata["aliases"]]
        options = {
            "dest": flag.dest,
            "default": argparse.SUPPRESS,
            "help": help_text,
            "metavar": metadata["metavar"] or names[0].lstrip("-").replace("-", "_").upper(),
        }
        if field.type is bool:
            options.pop("metavar")
            target.add_argument(*names, action="store_const", const=not default, **options)
            return
        if metadata["nargs"]:
            options.update(nargs=metadata["nargs"], type=_element_type(field.type))
        else:
            options.update(type=_converter(field.type, metadata["parse"]))
        if metadata["choices"] is not None:
            options["choices"] = metadata["choices"]
            options.pop("metavar")
        target.add_argument(*names, **options)

    def parse(self, argv=None) -> argparse.Namespace:
        return self.parser.parse_args(argv)

    def given(self, namespace: argparse.Namespace, config_class) -> bool:
        """Whether any flag of config_class was given."""
        return any(hasattr(namespace, flag.dest) for flag in self._flags[config_class])

    def build(self, config_class, namespace: argparse.Namespace):
        """config_class from the given flags and the fields' defaults; a bad value is argparse's
        usage error."""
        flags = self._flags[config_class]
        values = {
            flag.path: getattr(namespace, flag.dest)
            for flag in flags
            if hasattr(namespace, flag.dest)
        }
        missing = [flag for flag in flags if flag.required and flag.path not in values]
        if missing:
            self.parser.error(
                "the following arguments are required: " + ", ".join(map(self._display, missing))
            )
        try:
            return _instantiate(config_class, values, ())
        except ValueError as error:
            self.parser.error(str(error))

    @staticmethod
    def _display(flag: _Flag) -> str:
        field = flag.field
        if field.metadata["positional"]:
            return field.metadata["metavar"] or field.name.upper()
        return flag.renamed or flag_name(field, field.default)


def _instantiate(config_class, values: dict, prefix: tuple, template=None, factory=None):
    """config_class from values keyed by field path; a nested template is replaced where its flags
    were given, or made by its factory from them where the factory takes them (a template that
    depends on them: the demo's weights on its backbone)."""
    own = {}
    for field in dataclasses.fields(config_class):
        path = prefix + (field.name,)
        if field.metadata.get("nested"):
            if any(key[: len(path)] == path for key in values):
                if template is not None:
                    own[field.name] = _instantiate(
                        field.type, values, path, getattr(template, field.name)
                    )
                else:
                    own[field.name] = _instantiate(
                        field.type, values, path, factory=field.default_factory
                    )
        elif path in values:
            value = values[path]
            own[field.name] = tuple(value) if isinstance(value, list) else value
    if factory is not None and _takes_values(factory):
        return factory(**own)
    if factory is not None:
        template = factory()
    return dataclasses.replace(template, **own) if template is not None else config_class(**own)


def _takes_values(factory) -> bool:
    return any(
        parameter.kind is inspect.Parameter.VAR_KEYWORD
        for parameter in inspect.signature(factory).parameters.values()
    )


def parse(
    config_class, argv=None, *, description: str | None = None, raw_description: bool = False
):
    """The config of a tool that reads one config and nothing else."""
    flags = Flags(description, raw_description).add(config_class)
    return flags.build(config_class, flags.parse(argv))
