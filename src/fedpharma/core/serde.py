"""Frozen dataclasses to and from plain data (JSON / TOML): the package's one (de)serializer.

:func:`from_dict` checks a decoded document against a dataclass and reports *every* problem at
once, each naming its place the way TOML does (``[model] hidden``, ``[privacy.refusals[0]]``);
an unknown key gets a "did you mean". :func:`to_dict` writes the reverse: what it returns,
:func:`from_dict` reads back to an equal object.

Supported field types: ``bool``, ``int``, ``float`` (an integer is accepted; NaN and ±inf pass
unless bounded), ``str``, ``None``, ``Literal[...]``, ``X | Y``, ``tuple[X, ...]``,
``tuple[X, Y]``, ``Mapping[K, X]`` / ``dict[K, X]`` (``K`` is ``str`` or a ``Literal`` of the
allowed keys), ``object`` (taken as decoded) and nested dataclasses. A union of dataclasses is
told apart by a field each fixes to a one-value ``Literal`` (``kind: Literal["secagg"] =
"secagg"``), else by which one's keys the data has. A field's ``metadata`` may hold ``choices``
(allowed values), ``min`` / ``max`` (inclusive bounds of a number) and ``key`` (its name in the
data, when that differs from the attribute's).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import functools
import operator
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from fedpharma.core.errors import ConfigError

T = TypeVar("T")

_INVALID: Any = object()
_SCALARS: dict[Any, str] = {
    bool: "true/false",
    int: "an integer",
    float: "a number",
    str: "a string",
}


def from_dict(
    cls: type[T], raw: object, where: str = "", *, ignore_unknown: bool = False
) -> tuple[T | None, list[str]]:
    """``raw`` as a ``cls``, and every problem found in it.

    ``where`` names the table in messages ("" for the top level of a file). An invalid value
    falls back to its field's default, so callers can still run cross-field checks on the
    object; it is ``None`` only when a field without a default got no valid value.
    ``ignore_unknown`` skips unknown keys instead of reporting them (for formats whose readers
    must accept later additions).
    """
    problems: list[str] = []
    table = _Table(where.removeprefix("[").removesuffix("]"), where)
    obj = _Reader(problems, ignore_unknown).dataclass(cls, raw, table)
    return (None if obj is _INVALID else obj), problems


def load(
    cls: type[T],
    raw: object,
    *,
    source: str,
    where: str = "",
    ignore_unknown: bool = False,
    error: Callable[[Sequence[str], str], Exception] = ConfigError,
) -> T:
    """``raw`` as a ``cls``; raise ``error(problems, source)`` listing every problem."""
    obj, problems = from_dict(cls, raw, where, ignore_unknown=ignore_unknown)
    if problems or obj is None:
        raise error(problems, source)
    return obj


def to_dict(obj: object) -> dict[str, Any]:
    """A dataclass as plain data: dicts, lists (for tuples), scalars and ``None``."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"to_dict needs a dataclass instance, got {type(obj).__name__}")
    plain = _plain(obj)
    assert isinstance(plain, dict)
    return plain


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            _key(f): _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init
        }
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class _Table:
    """A table's dotted name and how messages call it."""

    name: str
    label: str

    def key(self, key: str) -> str:
        return f"{self.label} {key}" if self.label else key

    def child(self, key: str) -> _Table:
        name = f"{self.name}.{key}" if self.name else key
        return _Table(name, f"[{name}]")

    @property
    def title(self) -> str:
        return self.label or "top level"


@dataclasses.dataclass
class _Reader:
    problems: list[str]
    ignore_unknown: bool

    def dataclass(self, cls: type, raw: object, table: _Table) -> Any:
        if not isinstance(raw, dict):
            self.problems.append(f"{table.title} must be a table, got {type(raw).__name__}")
            return _INVALID
        fields = _fields(cls)
        hints = _hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in fields:
                if not self.ignore_unknown:
                    self.problems.append(_unknown(str(key), list(fields), table.title))
                continue
            f = fields[key]
            converted = self.field(f, hints[f.name], value, table, key)
            if converted is not _INVALID:
                kwargs[f.name] = converted
        required = [f for f in fields.values() if _required(f)]
        for f in required:
            if _key(f) not in raw:
                self.problems.append(f"{table.title}: missing key {_key(f)!r}")
        if any(f.name not in kwargs for f in required):
            return _INVALID
        return cls(**kwargs)

    def field(
        self, f: dataclasses.Field[Any], hint: Any, value: object, table: _Table, key: str
    ) -> Any:
        converted = self.value(hint, value, table, key)
        if converted is _INVALID:
            return _INVALID
        where, meta = table.key(key), f.metadata
        if "choices" in meta and converted is not None and converted not in meta["choices"]:
            choices = ", ".join(repr(c) for c in meta["choices"])
            self.problems.append(
                f"{where} = {_shown(value)}: must be one of {choices}"
                + did_you_mean(converted, meta["choices"])
            )
            return _INVALID
        lo, hi = meta.get("min"), meta.get("max")
        is_number = isinstance(converted, int | float) and not isinstance(converted, bool)
        if is_number and (
            (lo is not None and not converted >= lo) or (hi is not None and not converted <= hi)
        ):
            bounds = f"[{'-∞' if lo is None else lo}, {'∞' if hi is None else hi}]"
            self.problems.append(f"{where} = {_shown(value)}: must lie in {bounds}")
            return _INVALID
        return converted

    def value(self, hint: Any, value: object, table: _Table, key: str) -> Any:
        """``value`` converted to ``hint``; a plain value is judged whole, a structure by part."""
        if not _structured(hint):
            ok, converted = _convert(hint, value)
            if not ok:
                self.problems.append(
                    f"{table.key(key)} = {_shown(value)}: expected {_describe(hint)}"
                )
                return _INVALID
            return converted
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if dataclasses.is_dataclass(hint):
            return self.dataclass(typing.cast(type, hint), value, table.child(key))
        if origin in (types.UnionType, typing.Union):
            return self.union(args, value, table, key)
        if origin is tuple:
            return self.sequence(args, value, table, key)
        # a mapping from names to values: a table whose keys are the data's own
        inner = table.child(key)
        if not isinstance(value, dict):
            self.problems.append(f"{inner.title} must be a table, got {type(value).__name__}")
            return _INVALID
        names = typing.get_args(args[0]) if typing.get_origin(args[0]) is typing.Literal else ()
        for name in value:
            if names and name not in names:
                allowed = ", ".join(repr(n) for n in names)
                self.problems.append(f"{inner.title}: key {_shown(name)} is not one of {allowed}")
        items = {k: self.value(args[1], v, inner, _name(k)) for k, v in value.items()}
        if _INVALID in items.values() or any(names and k not in names for k in items):
            return _INVALID
        return items

    def union(self, args: tuple[Any, ...], value: object, table: _Table, key: str) -> Any:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return self.value(options[0], value, table, key)
        classes: list[Any] = [a for a in options if dataclasses.is_dataclass(a)]
        mappings = [a for a in options if _is_mapping(a)]
        if isinstance(value, dict) and mappings:
            return self.value(mappings[0], value, table, key)
        if not isinstance(value, dict) or not classes:
            others = tuple(a for a in args if a not in classes)
            ok, converted = _convert(_union(others), value) if others else (False, None)
            if not ok:
                expected = _describe(_union(args))
                self.problems.append(f"{table.key(key)} = {_shown(value)}: expected {expected}")
                return _INVALID
            return converted
        if len(classes) == 1:
            return self.dataclass(classes[0], value, table.child(key))
        tag = _discriminator(classes)
        if tag is None:  # told apart by their keys
            chosen = [c for c in classes if _fits(c, value)]
            if len(chosen) != 1:
                keys = " or ".join(f"({', '.join(_fields(c))})" for c in classes)
                self.problems.append(f"{table.child(key).title} needs the keys of one of {keys}")
                return _INVALID
        else:
            chosen = [c for c in classes if _tag_value(c, tag) == value.get(tag)]
            if not chosen:
                values = [_tag_value(c, tag) for c in classes]
                tags = ", ".join(repr(v) for v in values)
                given = _shown(value.get(tag))
                self.problems.append(
                    f"{table.child(key).key(tag)} = {given}: must be one of {tags}"
                    + did_you_mean(value.get(tag), values)
                )
                return _INVALID
        return self.dataclass(chosen[0], value, table.child(key))

    def sequence(self, args: tuple[Any, ...], value: object, table: _Table, key: str) -> Any:
        if not isinstance(value, list | tuple):
            self.problems.append(f"{table.key(key)} = {_shown(value)}: expected a list")
            return _INVALID
        if Ellipsis in args:
            hints = [args[0]] * len(value)
        elif len(args) == len(value):
            hints = list(args)
        else:
            self.problems.append(f"{table.key(key)}: expected {len(args)} items, got {len(value)}")
            return _INVALID
        items = [
            self.value(h, v, table, f"{key}[{i}]")
            for i, (h, v) in enumerate(zip(hints, value, strict=True))
        ]
        return _INVALID if any(item is _INVALID for item in items) else tuple(items)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """A dataclass's fields by their key in the data (``metadata["key"]``, else the name)."""
    return {_key(f): f for f in dataclasses.fields(cls) if f.init}


def _key(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("key", f.name))


def _fits(cls: type, raw: dict[Any, Any]) -> bool:
    """Whether ``raw`` has every required key of ``cls`` and no other than its own."""
    fields = _fields(cls)
    return set(raw) <= set(fields) and all(k in raw for k, f in fields.items() if _required(f))


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _structured(hint: Any) -> bool:
    """Whether ``hint`` holds a dataclass or a mapping (parts then get their own messages)."""
    if dataclasses.is_dataclass(hint):
        return True
    if _is_mapping(hint):
        return True
    return any(_structured(a) for a in typing.get_args(hint) if a is not Ellipsis)


def _is_mapping(hint: Any) -> bool:
    return typing.get_origin(hint) in (dict, collections.abc.Mapping)


def _discriminator(classes: list[Any]) -> str | None:
    """The key every class in a union fixes to its own one-value ``Literal``, if any."""
    common = set.intersection(
        *({k for k in _fields(c) if _tag_value(c, k) is not None} for c in classes)
    )
    return common.pop() if len(common) == 1 else None


def _tag_value(cls: Any, key: str) -> object:
    hint = _hints(cls)[_fields(cls)[key].name]
    args = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()
    return args[0] if len(args) == 1 else None


def _name(key: object) -> str:
    """A data-owned key as messages show it: as written if short and printable, else quoted."""
    return key if isinstance(key, str) and len(key) <= 60 and key.isprintable() else _shown(key)


def _shown(value: object) -> str:
    """``repr(value)``, shortened for a message."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _convert(hint: Any, value: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if hint is object or hint is Any:
        return True, value
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(hint):
            if arg is type(None):
                if value is None:
                    return True, None
                continue
            ok, v = _convert(arg, value)
            if ok:
                return True, v
        return False, None
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint)), value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            return False, None
        if Ellipsis in args:
            args = (args[0],) * len(value)
        elif len(args) != len(value):
            return False, None
        items = [_convert(a, v) for a, v in zip(args, value, strict=True)]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if hint is str:
        return isinstance(value, str), value
    if hint is type(None):
        return value is None, None
    return False, None


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is tuple and Ellipsis in typing.get_args(hint):
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if origin is tuple:
        return f"a list of ({', '.join(_describe(a) for a in typing.get_args(hint))})"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "nothing (omit the key)"
    if dataclasses.is_dataclass(hint) or _is_mapping(hint):
        return "a table"
    return _SCALARS.get(hint, str(hint))


def _union(hints: tuple[Any, ...]) -> Any:
    return functools.reduce(operator.or_, hints)


def did_you_mean(given: object, choices: Sequence[object]) -> str:
    """``; did you mean 'x'?`` for a string close to one of the string ``choices``, else ``""``."""
    if not isinstance(given, str):
        return ""
    options = {str(c).lower(): str(c) for c in choices if isinstance(c, str)}
    close = difflib.get_close_matches(given.lower(), list(options), n=1, cutoff=0.6)
    return f"; did you mean {options[close[0]]!r}?" if close else ""


def _unknown(key: str, known: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
    return f"{where}: unknown key {_shown(key)}{hint}"
