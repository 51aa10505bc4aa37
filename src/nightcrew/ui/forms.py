"""A processor's form, drawn from the JSON schema of its configuration, and read back.

The catalog (`nightcrew.catalog`) gives each processor's pydantic JSON schema; this module
turns its properties into form fields (text, number, checkbox, a choice for enums, and a
JSON text area for anything nested) and the posted strings back into a configuration. The
conversion only shapes the input: the processor's own model, through `actions.enqueue`,
is what validates it, so the form can never accept what the API would refuse.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from nightcrew.enqueue import TaskOptions

FieldKind = Literal["text", "integer", "number", "boolean", "select", "json"]
#: Form names of configuration fields start with this, apart from the task options'.
PREFIX = "config."


class FormErrors(Exception):
    """Input that cannot even be shaped into a configuration: field name -> message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = dict(errors)


@dataclass(frozen=True, slots=True)
class FormField:
    """One input of the form; ``value`` is what it shows (the default, or what was posted)."""

    name: str
    label: str
    kind: FieldKind
    required: bool
    nullable: bool
    value: str
    help: str | None = None
    choices: tuple[str, ...] = ()
    attrs: Mapping[str, str] = field(default_factory=dict)

    @property
    def input_name(self) -> str:
        return PREFIX + self.name

    @property
    def input_id(self) -> str:
        return "f-" + "".join(c if c.isalnum() else "-" for c in self.name)


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a local ``$ref`` (pydantic puts enums and nested models in ``$defs``)."""
    seen = 0
    while "$ref" in schema and seen < 10:
        ref = str(schema["$ref"])
        if not ref.startswith("#/"):
            break
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        schema = merged
        seen += 1
    return schema


def _shape(prop: Mapping[str, Any], root: Mapping[str, Any]) -> tuple[Mapping[str, Any], bool]:
    """The property's schema without ``null`` alternatives, and whether null is allowed."""
    prop = _resolve(prop, root)
    options = prop.get("anyOf") or prop.get("oneOf")
    if isinstance(options, list):
        concrete = [_resolve(o, root) for o in options if o.get("type") != "null"]
        nullable = len(concrete) < len(options)
        if len(concrete) == 1:
            merged = {**prop, **concrete[0]}
            merged.pop("anyOf", None)
            merged.pop("oneOf", None)
            return merged, nullable
        return {**prop, "type": "__union__"}, nullable
    kind = prop.get("type")
    if isinstance(kind, list):
        concrete_types = [k for k in kind if k != "null"]
        nullable = len(concrete_types) < len(kind)
        if len(concrete_types) == 1:
            return {**prop, "type": concrete_types[0]}, nullable
        return {**prop, "type": "__union__"}, nullable
    return prop, False


def _shown(value: Any, kind: FieldKind) -> str:
    if value is None:
        return ""
    if kind == "json":
        return json.dumps(value, indent=2)
    if kind == "boolean":
        return "true" if value else ""
    return str(value)


def fields_of(schema: Mapping[str, Any] | None) -> list[FormField]:
    """The form fields of a configuration schema, in the model's field order."""
    if not schema:
        return []
    required = set(schema.get("required", ()))
    result = []
    for name, raw in (schema.get("properties") or {}).items():
        prop, nullable = _shape(raw, schema)
        kind: FieldKind
        choices: tuple[str, ...] = ()
        attrs: dict[str, str] = {}
        json_type = prop.get("type")
        if "enum" in prop:
            kind = "select"
            choices = tuple(str(v) for v in prop["enum"])
        elif "const" in prop:
            kind = "select"
            choices = (str(prop["const"]),)
        elif json_type == "boolean":
            kind = "boolean"
        elif json_type == "integer":
            kind = "integer"
        elif json_type == "number":
            kind = "number"
        elif json_type == "string":
            kind = "text"
        else:
            kind = "json"
        for key, attr in (
            ("minimum", "min"),
            ("maximum", "max"),
            ("maxLength", "maxlength"),
            ("minLength", "minlength"),
        ):
            if key in prop and kind in ("integer", "number", "text"):
                attrs[attr] = str(prop[key])
        if kind == "number":
            attrs["step"] = "any"
        help_text = prop.get("description")
        if kind == "json":
            hint = "JSON"
            help_text = f"{help_text} ({hint})" if help_text else hint
        result.append(
            FormField(
                name=name,
                label=str(prop.get("title") or name),
                kind=kind,
                required=name in required,
                nullable=nullable,
                value=_shown(prop.get("default"), kind),
                help=help_text,
                choices=choices,
                attrs=attrs,
            )
        )
    return result


def with_values(fields: list[FormField], form: Mapping[str, str]) -> list[FormField]:
    """The fields showing what was posted (a refused form is shown again as it was sent)."""
    shown = []
    for f in fields:
        if f.kind == "boolean":
            value = "true" if form.get(f.input_name) else ""
        else:
            value = form.get(f.input_name, "")
        shown.append(
            FormField(
                f.name, f.label, f.kind, f.required, f.nullable, value, f.help, f.choices, f.attrs
            )
        )
    return shown


def _enum_value(text: str, schema_prop: Mapping[str, Any]) -> Any:
    for choice in schema_prop.get("enum", ()):
        if str(choice) == text:
            return choice
    return text


def config_from(
    fields: list[FormField], form: Mapping[str, str], schema: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The configuration the posted strings mean. An empty optional field is left out (the
    processor's default applies) or, if it may be null, sent as null when it has no default.
    """
    config: dict[str, Any] = {}
    errors: dict[str, str] = {}
    properties = (schema or {}).get("properties") or {}
    for f in fields:
        text = form.get(f.input_name, "")
        if f.kind == "boolean":
            config[f.name] = bool(text)
            continue
        if text.strip() == "":
            if f.required:
                errors[f.name] = "required"
            continue
        try:
            if f.kind == "integer":
                config[f.name] = int(text.strip())
            elif f.kind == "number":
                number = float(text.strip())
                if not math.isfinite(number):
                    raise ValueError("not a finite number")
                config[f.name] = number
            elif f.kind == "json":
                config[f.name] = json.loads(text)
            elif f.kind == "select":
                prop, _ = _shape(properties.get(f.name, {}), schema or {})
                config[f.name] = _enum_value(text, prop)
            else:
                config[f.name] = text
        except ValueError as exc:
            errors[f.name] = str(exc) if f.kind == "json" else f"not a valid {f.kind}"
    if errors:
        raise FormErrors(errors)
    return config


#: The task options the form offers, with their labels (the processor's defaults apply
#: when left empty).
OPTION_FIELDS = (
    ("queue", "Queue"),
    ("priority", "Priority"),
    ("max_attempts", "Max attempts"),
    ("timeout", "Timeout (seconds)"),
    ("start_in", "Start in (seconds)"),
    ("unique_key", "Unique key"),
)


def options_from(form: Mapping[str, str]) -> TaskOptions:
    """The task options of the form (empty: the processor class's default)."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, caster in (
        ("queue", str),
        ("unique_key", str),
        ("priority", int),
        ("max_attempts", int),
        ("timeout", float),
        ("start_in", float),
    ):
        text = form.get("option." + name, "").strip()
        if not text:
            continue
        try:
            value = caster(text)
        except ValueError:
            errors["option." + name] = "not a number"
            continue
        if isinstance(value, float) and not math.isfinite(value):
            errors["option." + name] = "not a finite number"
            continue
        values[name] = value
    if errors:
        raise FormErrors(errors)
    return TaskOptions(inactive=bool(form.get("option.inactive")), **values)
