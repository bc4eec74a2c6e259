"""The machinery shared by every configuration dataclass: field declarations and checks.

A configuration is a tree of frozen, slotted dataclasses. Each field is declared with
``spec(help, unit, ...)``, which records its help text, unit and constraints in the field's
metadata; ``check_fields`` (called from each class's ``__post_init__``) enforces them, so an
invalid configuration cannot be constructed, whether it comes from YAML or from
``dataclasses.replace`` in a sweep. ``iter_fields`` lists every field with its dotted key,
for generating command-line options and documentation.

Annotations here and in the config classes are real types, not strings (no
``from __future__ import annotations``): the checks read ``field.type`` directly.
"""

import dataclasses
import difflib
import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from neupims_py.errors import UserError


class ConfigError(UserError):
    """A configuration value that is missing, of the wrong type or out of range.

    ``reason`` is the message alone and ``field`` the dotted key, relative to the object
    that raised it; ``related`` names the other fields a cross-field check involved. The
    loader re-raises it with ``within`` to give the full key and the file (or override) the
    offending values came from; ``path`` is that file, or ``override '<text>'``.
    """

    def __init__(self, reason: str, *, path: str | None = None, field: str | None = None,
                 related: Sequence[str] = ()):
        super().__init__(reason, path=path, field=field)
        self.reason = reason
        self.related = tuple(related)

    def within(self, prefix: str, path: str | None) -> "ConfigError":
        field = join_key(prefix, self.field) if self.field else prefix or None
        related = tuple(join_key(prefix, r) for r in self.related)
        return ConfigError(self.reason, path=path if path is not None else self.path,
                           field=field, related=related)


def join_key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def spec(
    help: str,
    unit: str = "",
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    choices: Sequence[str] = (),
    minimum: int | float | None = None,
    power_of_two: bool = False,
) -> Any:
    """Declare a config field: its help text, unit, default (if any) and constraints."""
    metadata = {
        "help": help,
        "unit": unit,
        "choices": tuple(choices),
        "minimum": minimum,
        "power_of_two": power_of_two,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def is_section(tp: Any) -> bool:
    """True for a nested config dataclass (a YAML mapping), False for a scalar field."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def describe_expected(f: dataclasses.Field) -> str:
    """The expected form of a field's value, for error messages ("an integer >= 0 (cycles)")."""
    meta = f.metadata
    if meta.get("choices"):
        return "one of [" + ", ".join(meta["choices"]) + "]"
    if is_section(f.type):
        return f"a mapping of {f.type.__name__} fields"
    text = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[f.type]
    if meta.get("power_of_two"):
        text = "a power of two (1, 2, 4, ...)"
    elif meta.get("minimum") is not None:
        text += f" >= {meta['minimum']}"
    if meta.get("unit"):
        text += f" ({meta['unit']})"
    return text


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _has_type(value: Any, tp: type) -> bool:
    if tp is int:
        # bool is a subclass of int, and `true` is never a sensible count.
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return (isinstance(value, int | float) and not isinstance(value, bool)
                and math.isfinite(value))
    return isinstance(value, tp)


def check_fields(obj: Any) -> None:
    """Check every field of a config dataclass against its type and declared constraints.

    Integers given for a float field are stored as floats, so that the canonical form (and
    the config hash) does not depend on whether a YAML file wrote ``1000`` or ``1000.0``.
    """
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        tp = f.type
        meta = f.metadata
        if not _has_type(value, tp):
            raise ConfigError(
                f"expected {describe_expected(f)}, got {value!r} ({_type_name(value)})",
                field=f.name,
            )
        if is_section(tp) or tp is bool:
            continue
        if tp is str:
            if meta["choices"] and value not in meta["choices"]:
                close = difflib.get_close_matches(value, meta["choices"], n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(
                    f"expected {describe_expected(f)}, got {value!r}{hint}", field=f.name
                )
            continue
        if tp is float and isinstance(value, int):
            # A frozen dataclass can only be normalised through object.__setattr__.
            object.__setattr__(obj, f.name, float(value))
        unit = f" {meta['unit']}" if meta["unit"] else ""
        if meta["power_of_two"] and (value <= 0 or value & (value - 1)):
            raise ConfigError(f"must be a power of two (1, 2, 4, ...), got {value}", field=f.name)
        minimum = meta["minimum"]
        if minimum is not None and value < minimum:
            if minimum == 0:
                raise ConfigError(f"must not be negative, got {value}{unit}", field=f.name)
            raise ConfigError(f"must be at least {minimum}{unit}, got {value}", field=f.name)


class FieldDoc(NamedTuple):
    """One leaf field of a config tree, for generated command-line options and docs."""

    key: str  # dotted key, e.g. "memory.timing.tRCDRD"
    type: type  # int, float, bool or str
    default: Any  # dataclasses.MISSING when the field is required
    help: str
    unit: str
    choices: tuple[str, ...]


def iter_fields(cls: type, prefix: str = "") -> Iterator[FieldDoc]:
    """Every leaf field of a config dataclass tree, depth first, in declaration order."""
    for f in dataclasses.fields(cls):
        key = join_key(prefix, f.name)
        if is_section(f.type):
            yield from iter_fields(f.type, key)
            continue
        default = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        meta = f.metadata
        yield FieldDoc(key, f.type, default, meta["help"], meta["unit"], meta["choices"])
