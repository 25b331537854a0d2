"""Typed recipe configs: YAML files and command-line overrides mapped onto nested dataclasses.

A recipe declares its config as nested ``@dataclass`` es with typed fields and defaults. This
module reads a YAML file onto them, checks every value against its field's type, applies
command-line overrides such as ``--train.epochs 2``, and writes the resolved config back to YAML
so that a run is reproducible from its output folder.

Why not yacs or plain dicts: the CLIP-ReID lineage shows what stringly-typed configs cost
(``FEAT_NORM: 'no'`` still normalises; dead keys go unnoticed). Here a misspelt key is an error
with a suggestion, and ``yes``/``no`` are not booleans.

Supported field types: ``int``, ``float``, ``bool``, ``str``, ``pathlib.Path``, ``Literal[...]``,
``X | None`` / ``Optional[X]``, other unions, ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``,
``dict[str, X]``, ``Any`` and nested dataclasses.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

__all__ = [
    "RESUME_LATEST",
    "ConfigError",
    "RecipeArgs",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "parse_overrides",
    "parse_recipe_args",
    "save_config",
]

T = TypeVar("T")

RESUME_LATEST = "latest"
"""Value of :attr:`RecipeArgs.resume` when ``--resume`` is given without a path."""


class ConfigError(ValueError):
    """A config file or command-line override that does not fit the recipe's config dataclasses."""


# --------------------------------------------------------------------------------------------
# YAML with YAML 1.2 scalars: ``1e-5`` is a float and only true/false are booleans.
# PyYAML follows YAML 1.1, where ``1e-5`` is a *string* and ``yes``/``no``/``on``/``off`` are
# booleans; both surprise people writing learning rates and flags.
# --------------------------------------------------------------------------------------------
_BOOL_TAG = "tag:yaml.org,2002:bool"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_FLOAT_RE = re.compile(
    r"""^[-+]?(?:
        [0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[0-9][0-9_]*[eE][-+]?[0-9]+
        |\.(?:inf|Inf|INF)
      )$
      |^\.(?:nan|NaN|NAN)$""",
    re.X,
)


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 booleans and floats (see the comment above)."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(_BOOL_TAG, _BOOL_RE, list("tTfF"))
_ConfigLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: no arbitrary objects


# --------------------------------------------------------------------------------------------
# Type checking and conversion
# --------------------------------------------------------------------------------------------
_NONE_TYPE = type(None)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(tp, False)``."""
    if _is_union(tp):
        args = typing.get_args(tp)
        if _NONE_TYPE in args:
            rest = tuple(a for a in args if a is not _NONE_TYPE)
            return (rest[0] if len(rest) == 1 else Union[rest]), True  # noqa: UP007
    return tp, False


def _describe(tp: Any) -> str:
    """A short human-readable name of a type annotation, for error messages."""
    if tp is Any:
        return "any value"
    if dataclasses.is_dataclass(tp):
        return f"a mapping (section {tp.__name__})"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if _is_union(tp):
        names = [_describe(a) for a in args if a is not _NONE_TYPE]
        text = " or ".join(names)
        return text + " or null" if _NONE_TYPE in args else text
    if origin in (list, Sequence):
        return f"list of {_describe(args[0])}" if args else "list"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_describe(args[0])}"
        return f"list of {len(args)} items ({', '.join(_describe(a) for a in args)})"
    if origin in (dict, Mapping):
        return f"mapping of {_describe(args[1])}" if args else "mapping"
    if tp is bool:
        return "bool (true/false)"
    return getattr(tp, "__name__", str(tp))


def _type_error(source: str, path: str, tp: Any, value: Any) -> ConfigError:
    return ConfigError(
        f"{source}: field '{path}': expected {_describe(tp)}, got {type(value).__name__} {value!r}"
    )


def _convert(value: Any, tp: Any, path: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert containers (lists -> tuples...)."""
    if tp is Any or tp is object:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        return _build_dataclass(tp, value, path, source)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        for allowed in args:
            if value == allowed and type(value) is type(allowed):
                return value
        raise _type_error(source, path, tp, value)
    if _is_union(tp):
        if value is None:
            if _NONE_TYPE in args:
                return None
            raise _type_error(source, path, tp, value)
        for arg in args:
            if arg is _NONE_TYPE:
                continue
            try:
                return _convert(value, arg, path, source)
            except ConfigError:
                continue
        raise _type_error(source, path, tp, value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(source, path, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(source, path, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(source, path, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(source, path, tp, value)
    if tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _type_error(source, path, tp, value)
    if origin in (list, Sequence) or tp in (list, Sequence):
        if not isinstance(value, (list, tuple)):
            raise _type_error(source, path, tp, value)
        item_tp = args[0] if args else Any
        return [_convert(v, item_tp, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise _type_error(source, path, tp, value)
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item_tp = args[0] if args else Any
            return tuple(_convert(v, item_tp, f"{path}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _type_error(source, path, tp, value)
        return tuple(_convert(v, a, f"{path}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _type_error(source, path, tp, value)
        key_tp, val_tp = args if args else (Any, Any)
        return {
            _convert(k, key_tp, f"{path}.<key>", source): _convert(v, val_tp, f"{path}.{k}", source)
            for k, v in value.items()
        }
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _type_error(source, path, tp, value)
    raise TypeError(f"Config field '{path}' has an annotation hf_reid cannot check: {tp!r}.")


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """The init fields of a dataclass with their resolved type hints."""
    try:
        hints = typing.get_type_hints(cls)
    except NameError as err:
        raise TypeError(
            f"Cannot resolve the field types of config class {cls.__name__} ({err}); define config "
            "dataclasses at module level so their annotations can be evaluated."
        ) from err
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def _unknown_key_error(source: str, path: str, key: Any, known: Sequence[str]) -> ConfigError:
    where = f"{path}.{key}" if path else str(key)
    hint = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    suggestion = f" Did you mean '{f'{path}.{hint[0]}' if path else hint[0]}'?" if hint else ""
    section = f"section '{path}'" if path else "the top level"
    return ConfigError(
        f"{source}: unknown key '{where}'.{suggestion} Known keys of {section}: {', '.join(known)}."
    )


def _build_dataclass(cls: type[T], data: Any, path: str, source: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: {'section ' + repr(path) if path else 'the config'} must be a mapping of "
            f"field: value, got {type(data).__name__} {data!r}"
        )
    fields = _fields(cls)
    for key in data:
        if key not in fields:
            raise _unknown_key_error(source, path, key, list(fields))
    kwargs = {}
    for name, (field, tp) in fields.items():
        dotted = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(data[name], tp, dotted, source)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: required field '{dotted}' is missing (it has no default).")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # validation in the dataclass's __post_init__
        where = f"section '{path}'" if path else "config"
        raise ConfigError(f"{source}: {where}: {err}") from err


# --------------------------------------------------------------------------------------------
# Command-line overrides
# --------------------------------------------------------------------------------------------
def _field_type_at(cls: type, dotted: str, source: str) -> Any:
    """The annotation of the field at ``dotted`` (e.g. ``train.epochs``) in the config ``cls``."""
    tp: Any = cls
    walked: list[str] = []
    for part in dotted.split("."):
        section, _ = _unwrap_optional(tp)
        if not dataclasses.is_dataclass(section):
            raise ConfigError(
                f"{source}: '{'.'.join(walked)}' is a value of type {_describe(tp)}, not a section; "
                f"'{dotted}' does not exist."
            )
        fields = _fields(section)
        if part not in fields:
            raise _unknown_key_error(source, ".".join(walked), part, list(fields))
        tp = fields[part][1]
        walked.append(part)
    section, optional = _unwrap_optional(tp)
    if dataclasses.is_dataclass(section) and not optional:
        raise _section_error(source, dotted, section, optional=False)
    return tp


def _section_error(source: str, dotted: str, section: type, *, optional: bool) -> ConfigError:
    example = next(iter(_fields(section)), "field")
    return ConfigError(
        f"{source}: '{dotted}' is a section, not a value; override its fields instead, "
        f"e.g. --{dotted}.{example} VALUE" + (" (or switch it off with null)." if optional else ".")
    )


def _accepts_str(tp: Any) -> bool:
    """True when a raw command-line string is a valid value of ``tp`` without YAML parsing."""
    inner, _ = _unwrap_optional(tp)
    if inner is str or inner is Path:
        return True
    return typing.get_origin(inner) is Literal and any(isinstance(a, str) for a in typing.get_args(inner))


def _parse_override_value(text: str, tp: Any, dotted: str, source: str) -> Any:
    """Turn the command-line text of an override into a value of the field's type."""
    inner, optional = _unwrap_optional(tp)
    if optional and text in ("null", "Null", "NULL", "none", "None", "~"):
        return None
    if dataclasses.is_dataclass(inner):  # an optional section takes only null on the command line
        raise _section_error(source, dotted, inner, optional=True)
    if _accepts_str(tp) and (inner in (str, Path) or text in typing.get_args(inner)):
        return Path(text) if inner is Path else text
    try:
        value = _yaml_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: cannot parse {text!r} for field '{dotted}': {err}") from err
    try:
        return _convert(value, tp, dotted, source)
    except ConfigError as err:
        hint = " Write lists as [a,b,c]." if typing.get_origin(inner) in (list, tuple) else ""
        hint += " Booleans are true or false." if inner is bool else ""
        raise ConfigError(f"{err}.{hint}" if hint else str(err)) from None


def parse_overrides(cls: type, overrides: Sequence[str]) -> dict[str, Any]:
    """Parse ``["--train.epochs", "2", "--model.name=foo", ...]`` into ``{dotted_key: typed value}``.

    Each value is parsed with the type of its field in ``cls``: strings stay raw, everything
    else is read as a YAML scalar or flow list (``[30,50]``) and type-checked. Later overrides of
    the same key win.
    """
    parsed: dict[str, Any] = {}
    i = 0
    while i < len(overrides):
        token = overrides[i]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(
                f"Unexpected command-line argument {token!r}: config overrides look like "
                f"--section.field VALUE or --section.field=VALUE."
            )
        key, has_eq, text = token[2:].partition("=")
        source = f"command-line override --{key}"
        if not has_eq:
            if i + 1 >= len(overrides) or overrides[i + 1].startswith("--"):
                raise ConfigError(f"{source}: missing value (use --{key} VALUE or --{key}=VALUE).")
            text = overrides[i + 1]
            i += 1
        tp = _field_type_at(cls, key, source)
        parsed[key] = _parse_override_value(text, tp, key, source)
        i += 1
    return parsed


def _merge_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = dict(child) if isinstance(child, Mapping) else {}
            node[part] = child
        node = child
    node[parts[-1]] = value


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def config_from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "config") -> T:
    """Build the config dataclass ``cls`` from a plain mapping, checking every key and type."""
    return _build_dataclass(cls, data, "", source)


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Read a YAML config onto the dataclass ``cls`` and apply command-line overrides.

    Args:
        cls: the recipe's top-level config dataclass.
        path: a YAML file; ``None`` starts from the dataclass defaults.
        overrides: command-line tokens such as ``["--train.epochs", "2", "--seed=3"]``.

    Raises:
        ConfigError: for a missing or malformed file, an unknown key (with the dotted path and a
            "did you mean" suggestion), a wrong type (with the field path, expected and got) or
            a missing required field.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"load_config needs a dataclass type, got {cls!r}")
    data: Any = {}
    source = "config defaults"
    if path is not None:
        source = f"config file '{path}'"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{source} does not exist.") from None
        except IsADirectoryError:
            raise ConfigError(f"{source} is a folder; pass a YAML file.") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{source} cannot be read: {err}") from None
        try:
            data = _yaml_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{source} is not valid YAML: {err}") from err
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}.")
        data = dict(data)
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"{source}: keys must be strings, got {key!r}.")
    for dotted, value in parse_overrides(cls, overrides).items():
        _merge_override(data, dotted, value)
    return _build_dataclass(cls, data, "", source)


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML/JSON-compatible containers (tuples become lists)."""
    return _to_plain(cfg)


class _ConfigDumper(yaml.SafeDumper):
    """Block-style mappings, flow-style lists: ``milestones: [30, 50]`` stays on one line."""


_ConfigDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML; :func:`load_config` reads it back to an equal config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(config_to_dict(cfg), Dumper=_ConfigDumper, sort_keys=False, default_flow_style=False)
    path.write_text(f"# Resolved config of this run ({type(cfg).__name__}).\n{text}", encoding="utf-8")


@dataclasses.dataclass
class RecipeArgs:
    """The command-line arguments every recipe shares (the config itself is returned separately)."""

    config: str | None
    """The YAML config file, if any."""
    output_dir: str
    """Where checkpoints, the resolved config, logs, eval_results.json and the model go."""
    resume: str | None
    """``None`` (fresh run), :data:`RESUME_LATEST` (latest checkpoint in output_dir) or a path."""
    push_to_hub: bool
    hub_model_id: str | None
    overrides: list[str]
    """The raw ``--section.field VALUE`` tokens that were applied to the config."""
    overwrite_output_dir: bool = False
    """Start over in an output folder that holds another run's checkpoints, deleting them."""


def _parse_flag(text: str) -> bool:
    """``true`` / ``false`` (YAML 1.2 spellings) for a boolean command-line flag."""
    if _BOOL_RE.match(text):
        return text.lower() == "true"
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_recipe_args(
    cls: type[T],
    argv: Sequence[str] | None = None,
    *,
    description: str | None = None,
    default_config: str | None = None,
    default_output_dir: str | None = None,
) -> tuple[T, RecipeArgs]:
    """Parse a recipe's command line: ``--config``, ``--output_dir``, ``--resume``,
    ``--overwrite_output_dir``, ``--push_to_hub``, ``--hub_model_id`` and ``--section.field VALUE``
    overrides.

    ``--resume`` without a value resumes from the latest checkpoint in the output folder; with a
    value (``--resume=PATH``) from that checkpoint. If ``cls`` has a top-level ``output_dir``
    field, ``--output_dir`` overrides it; otherwise ``--output_dir`` is required unless
    ``default_output_dir`` is given.
    """
    parser = argparse.ArgumentParser(
        description=description,
        allow_abbrev=False,
        epilog="Any config field can be overridden: --section.field VALUE or --section.field=VALUE.",
    )
    parser.add_argument("--config", default=default_config, help="YAML config file.")
    parser.add_argument("--output_dir", default=None, help="Output folder of the run.")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=RESUME_LATEST,
        default=None,
        metavar="CHECKPOINT",
        help="Resume from the latest checkpoint in --output_dir, or from CHECKPOINT (--resume=PATH).",
    )
    parser.add_argument(
        "--overwrite_output_dir",
        nargs="?",
        const=True,
        default=False,
        type=_parse_flag,
        metavar="true|false",
        help="Start over in an --output_dir that holds another run's checkpoints, deleting them.",
    )
    parser.add_argument("--push_to_hub", action="store_true", help="Push the trained model to the Hub.")
    parser.add_argument("--hub_model_id", default=None, help="Hub repository id, e.g. org/name.")
    namespace, rest = parser.parse_known_args(argv)

    overrides = list(rest)
    has_output_field = "output_dir" in _fields(cls)
    if namespace.output_dir is not None and has_output_field:
        overrides.append(f"--output_dir={namespace.output_dir}")
    cfg = load_config(cls, namespace.config, overrides)

    output_dir = getattr(cfg, "output_dir", None) if has_output_field else namespace.output_dir
    output_dir = output_dir or default_output_dir
    if not output_dir:
        raise ConfigError("No output folder: pass --output_dir DIR (or set output_dir in the config).")
    args = RecipeArgs(
        config=namespace.config,
        output_dir=str(output_dir),
        resume=namespace.resume,
        push_to_hub=namespace.push_to_hub,
        hub_model_id=namespace.hub_model_id,
        overrides=list(rest),
        overwrite_output_dir=namespace.overwrite_output_dir,
    )
    return cfg, args
