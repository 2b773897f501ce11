"""Checking values against type hints: one check for the recipe parser and the Python configs alike.

A recipe is read field by field against its dataclasses' annotations (:func:`gan_rl.cli.recipe.coerce`),
and a config built in Python (``DiscriminatorConfig(batch_size="32")``) must be refused the same way, at
construction and naming the field, instead of a bare ``TypeError`` deep in training (or, for
``batch_size=True``, not at all). Both go through :func:`check_value`; a dataclass that inherits
:class:`CheckedConfig` runs it on every field when it is built, then its own ``validate``.

The rules: ``bool`` is not an ``int`` (nor an ``int`` a ``bool``); an ``int`` is accepted for a ``float``
(and stored as one); a ``Literal`` takes exactly its choices (``True`` is not ``1``); ``X | None`` takes
None; ``list[X]`` checks each item (a tuple is taken as a list); a nested config dataclass takes an
instance or a mapping of its fields. Annotations this module does not know (a library's own classes) are
left to the code that owns them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

from gan_rl.errors import ConfigError


class FieldError(ValueError):
    """A value that does not fit its annotation. The message starts with ``where`` (the field's path),
    which is kept apart so that a union can tell an error inside a nested value from one about the value
    itself."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


# How a nested dataclass is built from what was given: the recipe parser passes its own (unknown keys with
# a suggestion, a data source written as a path), the Python configs use :func:`build_from_mapping`.
SectionBuilder = Callable[[type, Any, str], Any]


PLAIN_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    tuple: "a list",
    dict: "a mapping",
    Path: "a path",
}


def type_name(tp: Any) -> str:
    """An annotation as a user reads it: ``one of 'a', 'b'``, ``an integer or null``, ``a mapping``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp in PLAIN_NAMES or origin in PLAIN_NAMES:
        return PLAIN_NAMES[tp if tp in PLAIN_NAMES else origin]
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(tp, "__name__", str(tp))


def build_from_mapping(cls: type, value: Any, where: str) -> Any:
    """A nested config from Python: an instance as it is, a mapping of its fields built into one."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise FieldError(where, f"expected a {cls.__name__} or a mapping of its fields, got {value!r}.")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [str(k) for k in value if k not in names]
    if unknown:
        raise FieldError(
            where, f"{cls.__name__} has no field '{unknown[0]}'; its fields: {', '.join(names)}."
        )
    return cls(**value)  # a config that checks itself raises its own ConfigError, naming its class


def check_value(
    value: Any,
    tp: Any,
    where: str,
    *,
    numeric_strings: bool = False,
    section: SectionBuilder = build_from_mapping,
) -> Any:
    """``value`` checked against the annotation ``tp`` (converted where that loses nothing: an int to a
    float, a tuple to a list, a mapping to its dataclass), or a :class:`FieldError` naming ``where``.

    ``numeric_strings``: a string that reads as a number is a float (YAML reads ``1e-4``, without a dot,
    as a string); the recipe parser sets it, Python callers get no such guessing.
    """
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _check_union(value, tp, where, numeric_strings, section)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        valid = ", ".join(repr(c) for c in choices)
        raise FieldError(where, f"{value!r} is not a valid choice; valid: {valid}.")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return section(tp, value, where)
    if origin in (list, tuple) or tp in (list, tuple):
        return _check_sequence(value, tp, where, numeric_strings, section)
    if origin is dict or tp is dict or origin is Mapping:
        if not isinstance(value, Mapping):
            raise FieldError(where, f"expected a mapping, got {value!r}.")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise FieldError(where, f"expected true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise FieldError(where, f"expected an integer, got {value!r}.")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if numeric_strings and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise FieldError(where, f"expected a number, got {value!r}.")
    if tp is str:
        if isinstance(value, str):
            return value
        raise FieldError(where, f"expected a string, got {value!r}.")
    if tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise FieldError(where, f"expected a path, got {value!r}.")
    return value  # an annotation we do not check (left to the library that owns the field)


def _check_union(value: Any, tp: Any, where: str, numeric_strings: bool, section: SectionBuilder) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return check_value(value, arg, where, numeric_strings=numeric_strings, section=section)
        except FieldError as exc:
            if exc.where != where:  # wrong inside (an item of a list, a field of a mapping): say where
                raise
    raise FieldError(where, f"expected {type_name(tp)}, got {value!r}.")


def _check_sequence(value: Any, tp: Any, where: str, numeric_strings: bool, section: SectionBuilder) -> Any:
    origin = typing.get_origin(tp) or tp
    if not isinstance(value, (list, tuple)):
        raise FieldError(where, f"expected a list, got {value!r}.")
    args = typing.get_args(tp)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise FieldError(where, f"expected {len(args)} values, got {value!r}.")
        item_types = list(args)
    else:
        item_types = [args[0] if args else Any] * len(value)
    items = [
        check_value(v, t, f"{where}[{i}]", numeric_strings=numeric_strings, section=section)
        for i, (v, t) in enumerate(zip(value, item_types, strict=True))
    ]
    return tuple(items) if origin is tuple else items


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved type hints of a dataclass's init fields (cached: configs are built often)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init and f.name in hints}


def check_fields(obj: Any, names: list[str] | None = None) -> None:
    """Check the fields of dataclass instance ``obj`` (or only ``names``) against their type hints,
    storing converted values back; a :class:`FieldError` naming the first bad field otherwise."""
    for name, tp in field_types(type(obj)).items():
        if names is not None and name not in names:
            continue
        value = getattr(obj, name)
        checked = check_value(value, tp, name)
        if checked is not value:
            object.__setattr__(obj, name, checked)  # frozen dataclasses too


class CheckedConfig:
    """A config dataclass that refuses a bad field when it is built: each field against its type hint,
    then the class's own ``validate`` (ranges, choices that depend on each other); either is a
    :class:`gan_rl.errors.ConfigError` naming the class and the field.

    ``validate`` raises a ``ValueError`` whose message starts with the field (``batch_size: expected
    ...``); a subclass that adds rules calls ``super().validate()`` first, so that its rules see values
    of the right types.
    """

    def __post_init__(self) -> None:
        try:
            self.validate()
        except ConfigError:  # a nested config's own (names its class)
            raise
        except ValueError as exc:
            raise ConfigError(type(self).__name__, str(exc)) from None

    def validate(self) -> None:
        """Raise a ValueError naming the first field whose value does not fit its type hint."""
        check_fields(self)
