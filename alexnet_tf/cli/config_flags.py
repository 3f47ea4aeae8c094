"""absl flags defined from config dataclasses, so each default is written once.

Each field becomes a flag of the same name, type and default, with the help
text (and enum choices) from its `metadata` (see `alexnet_tf.training.config.
option`). A nested dataclass field (TrainConfig.model) contributes its own
fields as top-level flags. `from_flags` builds the dataclass back: a flag
given on the command line (or in a --flagfile) wins, then the preset's
value, then the field's default.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import typing
from typing import Any, Mapping, Sequence

from absl import flags

from alexnet_tf.training.config import ConfigError

FLAGS = flags.FLAGS
# The flags defined here belong to the launcher that asked for them, so its
# --help lists them as its own.
flags.disclaim_key_flags()


def _unwrap_optional(kind):
    args = typing.get_args(kind)
    if typing.get_origin(kind) is typing.Union and type(None) in args:
        return next(a for a in args if a is not type(None))
    return kind


def _is_sequence(kind) -> bool:
    return typing.get_origin(kind) in (collections.abc.Sequence, list, tuple)


def _element_type(kind):
    args = typing.get_args(kind)
    return args[0] if args else str


def _fields(cls) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def define_flags(cls, *, required: Sequence[str] = (), exclude: Sequence[str] = (),
                 flag_values: flags.FlagValues = FLAGS) -> list[str]:
    """Defines one flag per field of `cls` (recursing into nested dataclasses);
    returns the flag names."""
    names = []
    for field, kind in _fields(cls):
        if field.name in exclude:
            continue
        if dataclasses.is_dataclass(kind):
            names += define_flags(kind, exclude=exclude, flag_values=flag_values)
            continue
        _define(field, _unwrap_optional(kind), _default(field),
                field.name in required or _is_required(field), flag_values)
        names.append(field.name)
    return names


def _is_required(field: dataclasses.Field) -> bool:
    """A field without any default is a required flag."""
    return (field.default is dataclasses.MISSING
            and field.default_factory is dataclasses.MISSING)


def _define(field, kind, default, required, flag_values):
    name, meta = field.name, field.metadata
    help_text = meta.get("help") or name
    common = {"required": required, "flag_values": flag_values}
    bounds = {} if meta.get("lower_bound") is None else {"lower_bound": meta["lower_bound"]}
    if meta.get("choices"):  # numbers too (--crops=1|10): the field's type converts back
        flags.DEFINE_enum(name, None if default is None else str(default),
                          [str(c) for c in meta["choices"]], help_text, **common)
    elif kind is bool:
        flags.DEFINE_bool(name, default, help_text, **common)
    elif kind is int:
        flags.DEFINE_integer(name, default, help_text, **bounds, **common)
    elif kind is float:
        flags.DEFINE_float(name, default, help_text, **bounds, **common)
    elif kind is str:
        flags.DEFINE_string(name, default, help_text, **common)
    elif _is_sequence(kind) and meta.get("multi"):
        flags.DEFINE_multi_string(name, list(default) if default else None, help_text,
                                  **common)
    elif _is_sequence(kind):
        flags.DEFINE_list(name, None if default is None else [str(v) for v in default],
                          help_text, **common)
    else:
        raise TypeError(f"no flag type for field {name}: {kind}")


def _flag_value(flag_values, name: str, kind):
    value = flag_values[name].value
    kind = _unwrap_optional(kind)
    if kind in (int, float) and isinstance(value, str):  # a numeric enum
        return kind(value)
    if _is_sequence(kind) and value is not None:
        element = _element_type(kind)
        try:
            return tuple(element(v) for v in value)
        except ValueError:
            kind_name = "a whole number" if element is int else f"a {element.__name__}"
            raise ConfigError(name, ",".join(value), f"each item must be {kind_name}",
                              "flag") from None
    return value


def from_flags(cls, preset: Mapping[str, Any] | None = None, *,
               flag_values: flags.FlagValues = FLAGS, **fixed: Any):
    """`cls(...)` from the flags: given flags, then `preset`, then defaults.

    `fixed` values are set as they are (e.g. fields without a flag)."""
    preset = dict(preset or {})
    values: dict[str, Any] = {}
    for field, kind in _fields(cls):
        if field.name in fixed:
            values[field.name] = fixed[field.name]
        elif dataclasses.is_dataclass(kind):
            values[field.name] = from_flags(kind, preset.get(field.name) or {},
                                            flag_values=flag_values)
        elif field.name in flag_values and flag_values[field.name].present:
            values[field.name] = _flag_value(flag_values, field.name, kind)
        elif field.name in preset:
            values[field.name] = preset[field.name]
    return cls(**values)
