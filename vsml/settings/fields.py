"""How a setting is declared, once, and what is derived from the declaration (docs/DESIGN.md §8).

A section of the configuration is a frozen dataclass; each key is one field,
declared with :func:`setting` (default, one-line doc, optional rule) or, for a
nested section, :func:`section`. The field's type annotation is the key's type.
From these declarations alone :func:`build` checks a mapping read from YAML
(types, ranges, choices; every problem one line naming the dotted key) and
turns it into the typed, frozen section; :func:`leaves` lists every key with
its default, type, rule and doc (for the reference in docs/DESIGN.md §9 and
the checks against ``configs/default.yaml``).

Choices that come from the code implementing them (the learner registry, the
outer loops, ...) are named by module and attribute (:func:`one_of_names_in`);
this layer checks only that they are names and imports no component, so every
component can import its own typed section from here. Whether a name is in its
registry is checked by the run checks (:func:`vsml.run_checks.check_names`),
before any expensive work.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from vsml.config_tree import ConfigError


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


# --------------------------------------------------------------------------- rules


@dataclasses.dataclass(frozen=True)
class Rule:
    """A range or shape a value must have. ``decides_type``: the rule accepts several types itself
    (numbers accept ints and floats; unions such as ``auto | null | int``), so no type check runs first."""

    check: Callable[[Any], bool]
    text: str
    decides_type: bool = False

    @property
    def description(self) -> str:
        return self.text

    def problem(self, key: str, value) -> str | None:
        """The one-line complaint about ``value`` of ``key``, or None when it is fine."""
        return None if self.check(value) else f"{key}: must be {self.description}, got {value!r}"


@dataclasses.dataclass(frozen=True)
class OneOf(Rule):
    """One of fixed choices."""

    choices: tuple = ()

    @property
    def description(self) -> str:
        return f"one of {', '.join(map(str, self.choices))}"


@dataclasses.dataclass(frozen=True)
class NameIn(Rule):
    """A name in a registry of the code (``source``: module, attribute), which this layer does not import:
    here only a non-empty string; :func:`vsml.run_checks.check_names` checks the registry."""

    source: tuple[str, str] = ("", "")

    @property
    def description(self) -> str:
        return f"a name in `{'.'.join(self.source)}`"

    def names_problem(self, key: str, value, names) -> str | None:
        """The one-line complaint about ``value`` of ``key`` given the registry's ``names``, or None."""
        return None if value in names else f"{key}: must be one of {', '.join(map(str, names))}, got {value!r}"


@dataclasses.dataclass(frozen=True)
class Entries(Rule):
    """An open mapping: rules for some entries (``known``), one rule for any other entry (``others``)."""

    known: Mapping[str, Rule] = dataclasses.field(default_factory=dict)
    others: Rule | None = None

    def problem(self, key: str, value) -> str | None:
        if not isinstance(value, Mapping):
            return f"{key}: must be a mapping, got {value!r}"
        for name, entry in value.items():
            rule = self.known.get(name, self.others)
            found = rule.problem(f"{key}.{name}", entry) if rule is not None else None
            if found:
                return found
        return None


def entries(known: Mapping[str, Rule] | None = None, others: Rule | None = None) -> Entries:
    """An open mapping whose entries named in ``known`` follow their rule, any other entry ``others``."""
    return Entries(check=lambda value: True, text="", known=dict(known or {}), others=others)


def one_of(*choices) -> OneOf:
    return OneOf(check=lambda value, c=choices: value in c, text="", choices=choices)


def one_of_names_in(module: str, attribute: str) -> NameIn:
    """A name in ``module.attribute`` (a registry or a tuple of the code that implements them), checked by the run checks."""
    return NameIn(check=lambda value: isinstance(value, str) and bool(value), text="", source=(module, attribute))


def at_least(minimum: int, why: str = "") -> Rule:
    text = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
    return Rule(lambda value: _is_int(value) and value >= minimum, text + (f" ({why})" if why else ""))


POSITIVE_INT = at_least(1)
NON_NEGATIVE_INT = at_least(0)
POSITIVE_NUMBER = Rule(lambda v: _is_number(v) and v > 0, "a positive finite number", decides_type=True)
NON_NEGATIVE_NUMBER = Rule(lambda v: _is_number(v) and v >= 0, "a non-negative finite number", decides_type=True)
UNIT_INTERVAL = Rule(lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]", decides_type=True)
BELOW_ONE = Rule(lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)", decides_type=True)
NON_EMPTY_STR = Rule(lambda v: isinstance(v, str) and bool(v), "a non-empty string")
NAME_LIST = Rule(lambda v: isinstance(v, (list, tuple)) and all(isinstance(n, str) and n for n in v), "a list of names")
SWITCH_OR_SEED = Rule(
    lambda v: isinstance(v, bool) or (_is_int(v) and v >= 0), "true, false or an integer seed >= 0", decides_type=True
)


def shape(length: int | None = None, example: str = "[28, 28, 1]") -> Rule:
    """A list of positive integers (of ``length`` entries); a lone integer counts as a 1-list."""

    def check(value) -> bool:
        items = [value] if _is_int(value) else value
        return (
            isinstance(items, (list, tuple))
            and bool(items)
            and all(_is_int(v) and v > 0 for v in items)
            and (length is None or len(items) == length)
        )

    text = f"a list of {length} positive integers" if length else f"a list of positive integers, e.g. {example}"
    return Rule(check, text, decides_type=True)


def as_shape(value) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(v) for v in ([value] if _is_int(value) else value))


# --------------------------------------------------------------------------- declaring


def setting(default, doc: str, rule: Rule | None = None, convert: Callable[[Any], Any] | None = None):
    """A key: its default, one line of documentation, an optional rule and an optional conversion
    of the checked YAML value into the typed value (default: from the field's type)."""
    metadata = {"doc": doc, "rule": rule, "convert": convert}
    if isinstance(default, (Mapping, list, dict)):
        frozen = _freeze(default)
        return dataclasses.field(default_factory=lambda: frozen, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(cls, doc: str = ""):
    """A nested section: a mapping in YAML whose keys are ``cls``'s fields."""
    return dataclasses.field(default_factory=cls, metadata={"doc": doc or (cls.__doc__ or "").split("\n")[0]})


def _freeze(value):
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


# --------------------------------------------------------------------------- types


def _split_optional(hint) -> tuple[Any, bool]:
    """``(inner type, accepts null)`` of a field's annotation."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        return (args[0] if len(args) == 1 else hint), optional
    return hint, False


def _base(hint):
    origin = typing.get_origin(hint)
    return origin if origin is not None else hint


def is_section(hint) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def is_open(hint) -> bool:
    """A key typed ``Mapping`` holds free-form entries (not declared keys): a config layer may add any."""
    return _base(_split_optional(hint)[0]) is Mapping


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", tuple: "a list"}


def _type_matches(base, value) -> bool:
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return _is_int(value)
    if base is float:
        return _is_int(value) or isinstance(value, float)
    if base is str:
        return isinstance(value, str)
    if base is tuple:
        return isinstance(value, (list, tuple))
    if base is Mapping:
        return isinstance(value, Mapping)
    return True  # a union the rule decides


def _typed(base, value):
    if value is None:
        return None
    if base is float:
        return float(value)
    if base is tuple or base is Mapping:
        return _freeze(value)
    return value


def type_text(hint) -> str:
    """The type of a field as the key reference writes it (``int``, ``null or str``, ...)."""
    inner, optional = _split_optional(hint)
    union = isinstance(inner, types.UnionType) or typing.get_origin(inner) is typing.Union
    options = [a for a in typing.get_args(inner) if a is not type(None)] if union else [inner]
    name = " or ".join({tuple: "list", Mapping: "mapping"}.get(_base(a), _base(a).__name__) for a in options)
    return f"null or {name}" if optional else name


def or_null(description: str) -> str:
    """The description of a rule of a key that also takes null."""
    return description if "null" in description else f"null or {description}"


# --------------------------------------------------------------------------- checking and building


def spelling_hint(value, wanted: str) -> str:
    """How to write ``value`` where YAML read it as another type than ``wanted`` says ('' if no such fix).

    ``1e3`` is a float (``write 1000``), ``datasets: digits`` a string (``write [digits]``).
    """
    if isinstance(value, float) and value.is_integer() and "integer" in wanted:
        return f"; write {int(value)}"
    if isinstance(value, str) and wanted.endswith(("a list", "list of names")):
        return f"; write [{value}]"
    return ""


def _check_leaf(key: str, field: dataclasses.Field, hint, value) -> None:
    inner, optional = _split_optional(hint)
    rule: Rule | None = field.metadata.get("rule")
    if value is None:
        if optional:
            return
        raise ConfigError(f"{key}: must be {rule.description if rule else _TYPE_NAMES.get(_base(inner))}, got None")
    if (rule is None or not rule.decides_type) and not _type_matches(_base(inner), value):
        kind = _TYPE_NAMES.get(_base(inner), "a mapping")
        raise ConfigError(
            f"{key}: must be {'null or ' if optional else ''}{kind}, got {value!r}{spelling_hint(value, kind)}"
        )
    if rule is not None:
        found = rule.problem(key, value)
        if found and optional and not isinstance(rule, Entries):
            found = f"{key}: must be {or_null(rule.description)}, got {value!r}"
        if found:
            raise ConfigError(found + spelling_hint(value, rule.description))


def build(cls, values: Mapping | None, prefix: str = ""):
    """The frozen section ``cls`` from ``values`` (a mapping read from YAML; missing keys take their
    defaults), after checking every value. Raises ConfigError of one line naming the dotted key."""
    if values is not None and not isinstance(values, Mapping):
        raise ConfigError(f"{prefix or 'config'}: must be a mapping of keys to values, got {values!r}")
    values = values or {}
    hints = typing.get_type_hints(cls)
    typed = {}
    for field in dataclasses.fields(cls):
        if field.name not in values:
            continue
        key, value, hint = f"{prefix}{field.name}", values[field.name], hints[field.name]
        if is_section(hint):
            typed[field.name] = build(hint, value, f"{key}.")
            continue
        _check_leaf(key, field, hint, value)
        convert = field.metadata.get("convert")
        typed[field.name] = convert(value) if convert else _typed(_base(_split_optional(hint)[0]), value)
    return cls(**typed)


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One key as declared: dotted name, type annotation, default, rule and doc."""

    key: str
    hint: Any
    default: Any
    rule: Rule | None
    doc: str


def leaves(cls, prefix: str = "") -> Iterator[Leaf]:
    """Every key of section ``cls`` (nested sections walked), in declaration order."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint, key = hints[field.name], f"{prefix}{field.name}"
        if is_section(hint):
            yield from leaves(hint, f"{key}.")
            continue
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        yield Leaf(key, hint, default, field.metadata.get("rule"), field.metadata.get("doc", ""))


def section_paths(cls, prefix: str = "") -> Iterator[tuple[type, str]]:
    """``(section class, dotted path)`` of every nested section of ``cls``."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if is_section(hints[field.name]):
            path = f"{prefix}{field.name}"
            yield hints[field.name], path
            yield from section_paths(hints[field.name], f"{path}.")
