"""Typed records from plain data (YAML, JSON): the one checker for the run config, manifests and
bench results.

A record is a dataclass whose field annotations are the schema; a section of one may be a
``TypedDict`` (its keys required unless ``NotRequired``; keys beyond them are kept, so a section
written by a later version still reads). Values are checked against the annotations — dataclasses,
TypedDicts, ``X | None``, ``list[X]``, ``tuple[X, ...]``, ``dict[K, V]``, bool, int, float (an int
is taken), str (a number is taken as its text) — and the first mismatch is raised as the caller's
error type, naming the dotted field.

Not pydantic: this core runs inside the bench worker on the targets too (boards with Python and
numpy), where a compiled pydantic-core wheel is not always at hand; the records need nothing
beyond these rules.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, TypeVar

T = TypeVar("T")
UnknownMessage = Callable[[str, set], str]  # (dotted unknown key, names known at its level) -> message


def _default_unknown(dotted: str, known: set) -> str:
    return f"{dotted}: unknown field; known: {', '.join(sorted(known))}"


class _Reader:
    def __init__(self, error: type[Exception], unknown: UnknownMessage | None, ignore_unknown: bool):
        self.error, self.unknown, self.ignore_unknown = error, unknown or _default_unknown, ignore_unknown

    def record(self, cls, data, where: str):
        if not isinstance(data, dict):
            raise self.error(f"{where or 'record'}: expected a mapping, got {data!r}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown and not self.ignore_unknown:
            raise self.error(self.unknown(_join(where, unknown[0]), names))
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise self.error(f"{where or 'record'} lacks {', '.join(missing)}")
        values = {name: self.value(data[name], hints[name], _join(where, name)) for name in names & set(data)}
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:  # the record's own checks (__post_init__)
            raise self.error(f"{where or 'record'}: {exc}") from None

    def section(self, cls, data, where: str) -> dict:
        if not isinstance(data, dict):
            raise self.error(f"{where}: expected a mapping, got {data!r}")
        hints = typing.get_type_hints(cls, include_extras=True)
        missing = sorted(key for key, hint in hints.items()
                         if typing.get_origin(hint) is not typing.NotRequired and key not in data)
        if missing:
            raise self.error(f"{where} lacks {', '.join(missing)}")
        return {key: self.value(value, hints[key], _join(where, key)) if key in hints else value
                for key, value in data.items()}

    def value(self, value, hint, where: str):
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is typing.NotRequired or origin is typing.Required:
            return self.value(value, args[0], where)
        if hint is Any:
            return value
        if dataclasses.is_dataclass(hint):
            return value if isinstance(value, hint) else self.record(hint, value, where)
        if typing.is_typeddict(hint):
            return self.section(hint, value, where)
        if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
            return self.union(value, args, where)
        if origin in (list, tuple) or hint in (list, tuple):
            if not isinstance(value, (list, tuple)):
                raise self.error(f"{where}: expected a list, got {value!r}")
            item = args[0] if args else Any
            items = [self.value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if tuple in (origin, hint) else items
        if origin is dict or hint is dict:
            if not isinstance(value, dict):
                raise self.error(f"{where}: expected a mapping, got {value!r}")
            item = args[1] if len(args) == 2 else Any
            return {k: self.value(v, item, _join(where, str(k))) for k, v in value.items()}
        return self.scalar(value, hint, where)

    def union(self, value, args: tuple, where: str):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return self.value(value, arg, where)
            except self.error as exc:
                errors.append(str(exc))
        raise self.error(errors[0] if errors else f"{where}: bad value {value!r}")

    def scalar(self, value, hint, where: str):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if hint is bool and isinstance(value, bool):
            return value
        if hint is float and number:
            return float(value)
        if hint is int and number and isinstance(value, int):
            return value
        if hint is str and (number or isinstance(value, str)):
            return str(value)
        if hint not in (bool, float, int, str) and isinstance(hint, type) and isinstance(value, hint):
            return value
        expected = "true/false" if hint is bool else getattr(hint, "__name__", str(hint))
        raise self.error(f"{where}: expected {expected}, got {value!r}")


def _join(where: str, key: str) -> str:
    """``where.key``; after a file name ending in a colon, ``file: key``."""
    if not where:
        return key
    return f"{where} {key}" if where.endswith(":") else f"{where}.{key}"


def from_data(cls: type[T], data: Any, error: type[Exception], where: str = "", *,
              unknown: UnknownMessage | None = None, ignore_unknown: bool = False) -> T:
    """The ``cls`` record (a dataclass) that ``data`` describes, every value checked against its
    annotation; ``error`` (an exception type) is raised naming the first field that does not fit.
    ``unknown`` words the message for a key ``cls`` does not have (``ignore_unknown``: drop them)."""
    return _Reader(error, unknown, ignore_unknown).record(cls, data, where)
