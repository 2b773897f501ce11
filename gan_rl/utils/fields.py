"""Checking config values against their type hints, with pydantic: one engine for the recipe parser and the
Python configs alike.

A config built in Python (``DiscriminatorConfig(batch_size="32")``) must be refused at construction, naming
the field, instead of failing with a bare ``TypeError`` deep in training (or, for ``batch_size=True``, not
at all); a recipe is read against the same annotations. pydantic validates; this module only sets its rules
and says its errors as one line. The configs stay plain dataclasses (``HfArgumentParser`` parses them,
``dataclasses.asdict`` reads them): :class:`StrictSchema` gives a dataclass its pydantic schema, and
:class:`CheckedConfig` runs it on every field when the dataclass is built, then the class's own
``validate``.

The rules, tighter than pydantic's lax mode and looser than its strict one: ``bool`` is not an ``int`` (nor
an ``int`` a ``bool``, nor ``"32"`` either); an ``int`` is accepted for a ``float`` (and stored as one); a
``Literal`` takes exactly its choices (``True`` is not ``1``); a tuple is taken for a list; a nested config
takes an instance or a mapping of its fields. Values read from a file (:data:`FROM_FILE`, the recipe
parser's context) are also allowed what YAML cannot say otherwise: ``1e-4`` (read as a string, having no
dot) for a number, an empty section for its defaults, and what a class accepts in its
:meth:`StrictSchema.from_file_value` (a data source given as its path). Annotations pydantic cannot build a
schema for (a library's own classes) are left to the code that owns them.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import PydanticUserError, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError, core_schema

from gan_rl.errors import ConfigError

# The validation context of values read from a file (a recipe): see the module's docstring.
FROM_FILE = {"from_file": True}


class FieldError(ValueError):
    """A value that does not fit its annotation, as one line that starts with the field's path."""


# What a schema accepts, as a user reads it ("expected an integer"); pydantic's type error for each.
SCHEMA_NAMES = {
    "int": "an integer",
    "bool": "true or false",
    "float": "a number",
    "str": "a string",
    "list": "a list",
    "tuple": "a list",
    "dict": "a mapping",
    "none": "null",
    "dataclass": "a mapping",
    "definition-ref": "a mapping",  # a nested config
}
EXPECTED = {"string_type": SCHEMA_NAMES["str"]} | {
    f"{k}_type": v for k, v in SCHEMA_NAMES.items() if k != "str"
}
# Errors about the value itself not having the annotation's type: a union says them together, as "expected a
# string or null" (any other error, from inside a list or a nested config, names its own place).
TYPE_ERRORS = {*EXPECTED, "literal_error", "none_required", "expected_one_of"}


def _from_file(info: core_schema.ValidationInfo) -> bool:
    return bool(info.context and info.context.get("from_file"))


def _expected(schema: core_schema.CoreSchema) -> str:
    """What a schema accepts, as a user reads it: ``one of 'a', 'b'``, ``a string or null``."""
    kind = schema["type"]
    if kind == "literal":
        return "one of " + ", ".join(repr(c) for c in schema["expected"])
    if kind == "nullable":
        return f"{_expected(schema['schema'])} or null"
    if kind == "union":
        return " or ".join(_expected(c[0] if isinstance(c, tuple) else c) for c in schema["choices"])
    if kind not in SCHEMA_NAMES and isinstance(schema.get("schema"), dict):  # default, function-*: its inner
        return _expected(schema["schema"])
    return SCHEMA_NAMES.get(kind, kind)


def _number_from_file(value: Any, info: core_schema.ValidationInfo) -> Any:
    """YAML reads ``1e-4`` (no dot) as a string: a number, in a file."""
    if isinstance(value, str) and _from_file(info):
        try:
            return float(value)
        except ValueError:
            pass
    return value


_NOT_A_CHOICE = object()


def _exact_choice(expected: list[Any]) -> Callable[[Any, Any], Any]:
    """A ``Literal`` that takes exactly its choices (pydantic takes ``True`` for ``1``, as ``True == 1``)."""
    valid = ", ".join(repr(c) for c in expected)

    def validate(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
        try:
            result = handler(value)
        except ValidationError:
            result = _NOT_A_CHOICE
        if result is _NOT_A_CHOICE or type(result) is not type(value):
            raise PydanticCustomError(
                "literal_error",
                "{value} is not a valid choice; valid: {valid}.",
                {"value": repr(value), "valid": valid},
            )
        return result

    return validate


def _one_of(expected: str, tagged: bool) -> Callable[[Any, Any], Any]:
    """A union (``tagged``: pydantic names the arm in the error's place) or ``X | None``: a value of none of
    its types is one error, ``expected a string or null``; an error inside a value (an item of a list, a
    field of a nested config) is that error, at its place."""

    def validate(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            inside = [e for e in exc.errors() if len(e["loc"]) > tagged or e["type"] not in TYPE_ERRORS]
            if not inside:
                raise PydanticCustomError(
                    "expected_one_of",
                    "expected {expected}, got {got}.",
                    {"expected": expected, "got": repr(value)},
                ) from None
            if not tagged:
                raise
            first = inside[0]  # the arm's name left out of its place
            error = PydanticCustomError(
                first["type"], "{message}", {**first.get("ctx", {}), "message": first["msg"]}
            )
            line = {"type": error, "loc": first["loc"][1:], "input": first["input"]}
            raise ValidationError.from_exception_data("union", [line]) from None  # type: ignore[list-item]

    return validate


SUBSCHEMA_KEYS = ("schema", "items_schema", "keys_schema", "values_schema", "lax_schema", "strict_schema")


def strict_rules(schema: core_schema.CoreSchema) -> core_schema.CoreSchema:
    """``schema`` (one pydantic generated) with the module's rules: scalars strict, a number also from a
    file's string, a ``Literal`` exact, unions said as one error. A nested config's schema is a reference
    here; its own :class:`StrictSchema` applies them to it. Applied once: a schema that has them is marked."""
    if schema.get("metadata", {}).get(RULES_APPLIED):
        return schema
    result = _with_rules(dict(schema))  # type: ignore[arg-type]
    result["metadata"] = {**result.get("metadata", {}), RULES_APPLIED: True}
    return result


RULES_APPLIED = "gan_rl_strict_rules"


def _with_rules(schema: dict[str, Any]) -> core_schema.CoreSchema:
    for key in SUBSCHEMA_KEYS:
        if isinstance(schema.get(key), dict):
            schema[key] = strict_rules(schema[key])
    if isinstance(schema.get("items_schema"), list):  # a tuple's
        schema["items_schema"] = [strict_rules(s) for s in schema["items_schema"]]
    if isinstance(schema.get("fields"), list):  # a dataclass's arguments
        schema["fields"] = [
            {**f, "schema": strict_rules(f["schema"])} if isinstance(f, dict) else f for f in schema["fields"]
        ]
    kind = schema["type"]
    if kind == "union":
        schema["choices"] = [
            (strict_rules(c[0]), c[1]) if isinstance(c, tuple) else strict_rules(c) for c in schema["choices"]
        ]
    if kind in ("int", "bool", "str"):
        schema["strict"] = True
    elif kind == "float":
        schema["strict"] = True
        return core_schema.with_info_before_validator_function(_number_from_file, schema)  # type: ignore[arg-type]
    elif kind == "literal":
        return core_schema.no_info_wrap_validator_function(_exact_choice(schema["expected"]), schema)  # type: ignore[arg-type]
    elif kind in ("nullable", "union"):
        check = _one_of(_expected(schema), kind == "union")  # type: ignore[arg-type]
        return core_schema.no_info_wrap_validator_function(check, schema)  # type: ignore[arg-type]
    return schema  # type: ignore[return-value]


class _StrictRules:
    """``Annotated[tp, STRICT]``: ``tp`` validated with :func:`strict_rules`."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: Callable[[Any], Any]
    ) -> core_schema.CoreSchema:
        return strict_rules(handler(source))


STRICT = _StrictRules()


class StrictSchema:
    """A dataclass validated by pydantic with :func:`strict_rules`, as a field of another config or a section
    of a recipe: an instance as it is; a mapping of its fields built into one (a key that is no field an
    error listing the fields). From Python the class itself builds it, so that its own errors name it
    (``DiscriminatorRewardConfig.form``); from a file pydantic does, so that they name their place in the
    file (``discriminator.reward.form``)."""

    @classmethod
    def from_file_value(cls, value: Any) -> Any:
        """What a file may give instead of a mapping of the fields, as that mapping (a data source's path)."""
        return value

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: Callable[[Any], Any]
    ) -> core_schema.CoreSchema:
        schema = dict(strict_rules(handler(source)))
        # The class's reference goes on the wrapper: pydantic points every later use of the class (a second
        # field of that type, ``X | None``) at the schema holding the reference, which must be the one that
        # builds the class (a data source given as its path included), not the bare dataclass inside it.
        ref = schema.pop("ref", None)
        return core_schema.with_info_wrap_validator_function(
            functools.partial(_build, cls),
            schema,  # type: ignore[arg-type]
            ref=ref,
        )


def _build(
    cls: type, value: Any, handler: core_schema.ValidatorFunctionWrapHandler, info: core_schema.ValidationInfo
) -> Any:
    if isinstance(value, cls):
        return value
    from_file = _from_file(info)
    if from_file:
        value = {} if value is None else cls.from_file_value(value)  # type: ignore[attr-defined]
    if not isinstance(value, Mapping):
        expected = "a mapping" if from_file else f"a {cls.__name__} or a mapping of its fields"
        raise PydanticCustomError(
            "section_type", "expected {expected}, got {got}.", {"expected": expected, "got": repr(value)}
        )
    names = [f.name for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")]
    unknown = [str(k) for k in value if k not in names]
    if unknown:
        raise PydanticCustomError(
            "unknown_key",
            "{config} has no field '{key}'; its fields: {fields}.",
            {"config": cls.__name__, "key": unknown[0], "fields": ", ".join(names)},
        )
    return handler(value) if from_file else cls(**value)


def unknown_key_message(key: str, valid: list[str], where: str) -> str:
    """The line for a key that is not a field, with the closest valid spelling."""
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    shown = ", ".join(sorted(valid)) if len(valid) <= 40 else f"{len(valid)} fields, see the docs"
    return f"{where}: unknown key '{key}'.{hint} Valid keys: {shown}."


def _place(where: str, loc: tuple[int | str, ...]) -> str:
    for part in loc:
        where = f"{where}[{part}]" if isinstance(part, int) else f"{where}.{part}" if where else str(part)
    return where


def _error(exc: ValidationError, where: str, from_file: bool) -> Exception:
    """pydantic's first error as one line naming the field (a :class:`FieldError`); from Python, a nested
    config's own :class:`ConfigError` as it is (it names its class)."""
    first = exc.errors(include_url=False)[0]
    loc, kind, ctx = first["loc"], first["type"], first.get("ctx", {})
    place = _place(where, loc)
    if isinstance(ctx.get("error"), ConfigError):  # raised by the config itself, after its types passed
        return FieldError(f"{place}.{ctx['error'].detail}") if from_file else ctx["error"]
    if kind == "unknown_key" and from_file:
        return FieldError(unknown_key_message(ctx["key"], ctx["fields"].split(", "), place))
    if kind in EXPECTED:
        return FieldError(f"{place}: expected {EXPECTED[kind]}, got {first['input']!r}.")
    if kind in ("literal_error", "expected_one_of", "section_type", "unknown_key"):
        return FieldError(f"{place}: {first['msg']}")
    if kind == "value_error":
        return FieldError(f"{place}: {ctx.get('error', first['msg'])}")
    return FieldError(f"{place}: {first['msg'][:1].lower()}{first['msg'][1:]}, got {first['input']!r}.")


@functools.cache
def _adapter(tp: Any) -> TypeAdapter | None:
    try:
        return TypeAdapter(Annotated[tp, STRICT])
    except PydanticUserError:  # a library's own class: left to the code that owns the field
        return None


def check_value(value: Any, tp: Any, where: str, *, from_file: bool = False) -> Any:
    """``value`` validated against the annotation ``tp`` (converted where that loses nothing: an int to a
    float, a tuple to a list, a mapping to its config), or a :class:`FieldError` naming ``where``.

    ``from_file``: the value was read from a file (see the module's docstring); the recipe parser sets it,
    Python callers get no such guessing.
    """
    adapter = _adapter(tp)
    if adapter is None:
        return value
    try:
        return adapter.validate_python(value, context=FROM_FILE if from_file else None)
    except ValidationError as exc:
        raise _error(exc, where, from_file) from None


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


class CheckedConfig(StrictSchema):
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
