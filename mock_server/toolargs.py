"""Tool-call arguments that satisfy the tool's JSON Schema, drawn from a seeded RNG.

A schema is client input: it may ask for more than a mock should build (`minItems: 100000000`,
arrays nested in arrays) or be malformed (`"properties": [1, 2]`, `"minimum": "x"`). Both are a
ToolSchemaError, whose message names the keyword and the bound, and which the app answers with a
400. The bounds keep building the arguments of one call to a few milliseconds of the event loop.
"""

from __future__ import annotations

import math
import random
import string
from typing import Any

_WORDS = ("Paris", "Tokyo", "Berlin", "latency", "report", "weather", "celsius", "summary",
          "invoice", "order", "alpha", "beta", "search", "today", "stream", "cluster")
_MAX_DEPTH = 6  # deeper objects and arrays are generated empty
MAX_ITEMS = 100  # largest minItems a schema may ask for
MAX_STRING = 4096  # largest minLength a schema may ask for
MAX_VALUES = 2000  # values (numbers, strings, items, properties) in the arguments of one call
MAX_CHARS = 65536  # characters of generated strings in the arguments of one call
MAX_SCHEMA_DEPTH = 32  # nesting of anyOf/oneOf/allOf/properties/items the mock follows


class ToolSchemaError(ValueError):
    """A tool's parameters schema the mock will not or cannot build arguments for."""


def make_arguments(schema: dict | None, rng: random.Random) -> dict:
    """An object matching `schema` (a function's `parameters`); {} for no schema."""
    builder = _Builder(rng)
    value = builder.value(schema or {"type": "object"}, 0, 0)
    return value if isinstance(value, dict) else {"value": value}


def call_id(rng: random.Random) -> str:
    return "call_" + "".join(rng.choices(string.ascii_letters + string.digits, k=24))


def _int(schema: dict, key: str, default: int) -> int:
    value = schema.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ToolSchemaError(f"{key} must be a number, got {value!r}")
    return int(value)


def _number(schema: dict, key: str, default: float) -> float:
    value = schema.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise ToolSchemaError(f"{key} must be a finite number, got {value!r}")
    return float(value)


class _Builder:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.values = 0
        self.chars = 0

    def _count(self, n: int = 1) -> None:
        self.values += n
        if self.values > MAX_VALUES:
            raise ToolSchemaError(f"the arguments this schema asks for have more than {MAX_VALUES} values "
                                  "(the mock's limit)")

    def value(self, schema: Any, depth: int, nesting: int) -> Any:
        if nesting > MAX_SCHEMA_DEPTH:
            raise ToolSchemaError(f"schema is nested deeper than {MAX_SCHEMA_DEPTH} levels (the mock's limit)")
        if not isinstance(schema, dict):
            return None
        rng = self.rng
        self._count()
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if enum is not None and not isinstance(enum, list):
            raise ToolSchemaError(f"enum must be a list, got {type(enum).__name__}")
        if enum:
            return rng.choice(enum)
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if options is not None and not isinstance(options, list):
                raise ToolSchemaError(f"{key} must be a list, got {type(options).__name__}")
            options = [s for s in options or [] if isinstance(s, dict) and s.get("type") != "null"]
            if options:
                return self.value(rng.choice(options), depth, nesting + 1)
        parts = schema.get("allOf")
        if parts is not None and not isinstance(parts, list):
            raise ToolSchemaError(f"allOf must be a list, got {type(parts).__name__}")
        if parts:
            merged: dict = {}
            for part in parts:
                if isinstance(part, dict):
                    merged = _merge(merged, part)
            return self.value(merged, depth, nesting + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"] or ["null"]
            kind = rng.choice(kinds)
        if kind is None:
            kind = "object" if "properties" in schema else "string"
        if not isinstance(kind, str):
            raise ToolSchemaError(f"type must be a string or a list of strings, got {kind!r}")
        if depth >= _MAX_DEPTH and kind in ("object", "array"):
            return {} if kind == "object" else []
        if kind == "object":
            return self._object(schema, depth, nesting)
        if kind == "array":
            low = max(0, _int(schema, "minItems", 1))
            if low > MAX_ITEMS:
                raise ToolSchemaError(f"minItems {low} is over the mock's limit of {MAX_ITEMS}")
            high = min(_int(schema, "maxItems", max(low, 3)), max(low, 3))
            items = schema.get("items", {"type": "string"})
            n = rng.randint(low, max(low, high))
            self._count(n)
            return [self.value(items, depth + 1, nesting + 1) for _ in range(n)]
        if kind == "integer":
            low = _int(schema, "minimum", 0)
            high = _int(schema, "maximum", low + 100)
            return rng.randint(low, max(low, high))
        if kind == "number":
            low = _number(schema, "minimum", 0.0)
            high = _number(schema, "maximum", low + 100.0)
            return round(rng.uniform(low, max(low, high)), 2)
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema)

    def _object(self, schema: dict, depth: int, nesting: int) -> dict:
        properties = schema.get("properties") or {}
        if not isinstance(properties, dict):
            raise ToolSchemaError(f"properties must be an object, got {type(properties).__name__}")
        required = schema.get("required") or []
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ToolSchemaError("required must be a list of property names")
        wanted = set(required)
        out = {}
        for name, sub in properties.items():
            if name in wanted or self.rng.random() < 0.5:
                out[name] = self.value(sub, depth + 1, nesting + 1)
        return out

    def _string(self, schema: dict) -> str:
        rng = self.rng
        fmt = schema.get("format")
        if fmt == "date":
            return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if fmt == "date-time":
            return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
        if fmt == "email":
            return f"{rng.choice(_WORDS).lower()}@example.com"
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))
        low = _int(schema, "minLength", 0)
        if low > MAX_STRING:
            raise ToolSchemaError(f"minLength {low} is over the mock's limit of {MAX_STRING}")
        high = schema.get("maxLength")
        if len(text) < low:
            text = text + "x" * (low - len(text))
        if high is not None:
            text = text[: max(0, _int(schema, "maxLength", 0))]
        self.chars += len(text)
        if self.chars > MAX_CHARS:
            raise ToolSchemaError(f"the arguments this schema asks for have more than {MAX_CHARS} characters "
                                  "of strings (the mock's limit)")
        return text


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        if key == "properties" and isinstance(value, dict) and isinstance(a.get("properties", {}), dict):
            out["properties"] = {**a.get("properties", {}), **value}
        elif key == "required" and isinstance(value, list) and isinstance(a.get("required", []), list):
            out["required"] = list(a.get("required", [])) + list(value)
        else:
            out[key] = value
    return out
