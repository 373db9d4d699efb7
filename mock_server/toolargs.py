"""Tool-call arguments that satisfy the tool's JSON Schema, drawn from a seeded RNG."""

from __future__ import annotations

import random
import string
from typing import Any

_WORDS = ("Paris", "Tokyo", "Berlin", "latency", "report", "weather", "celsius", "summary",
          "invoice", "order", "alpha", "beta", "search", "today", "stream", "cluster")
_MAX_DEPTH = 6


def make_arguments(schema: dict | None, rng: random.Random) -> dict:
    """An object matching `schema` (a function's `parameters`); {} for no schema."""
    value = _value(schema or {"type": "object"}, rng, 0)
    return value if isinstance(value, dict) else {"value": value}


def call_id(rng: random.Random) -> str:
    return "call_" + "".join(rng.choices(string.ascii_letters + string.digits, k=24))


def _value(schema: Any, rng: random.Random, depth: int) -> Any:
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        options = [s for s in schema.get(key) or [] if isinstance(s, dict) and s.get("type") != "null"]
        if options:
            return _value(rng.choice(options), rng, depth)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict = {}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                merged = _merge(merged, part)
        return _value(merged, rng, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or ["null"]
        kind = rng.choice(kinds)
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if depth >= _MAX_DEPTH and kind in ("object", "array"):
        return {} if kind == "object" else []
    if kind == "object":
        return _object(schema, rng, depth)
    if kind == "array":
        low = int(schema.get("minItems", 1))
        high = int(schema.get("maxItems", max(low, 3)))
        return [_value(schema.get("items", {"type": "string"}), rng, depth + 1)
                for _ in range(rng.randint(low, max(low, high)))]
    if kind == "integer":
        low = int(schema.get("minimum", 0))
        high = int(schema.get("maximum", low + 100))
        return rng.randint(low, max(low, high))
    if kind == "number":
        low = float(schema.get("minimum", 0.0))
        high = float(schema.get("maximum", low + 100.0))
        return round(rng.uniform(low, max(low, high)), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, rng)


def _object(schema: dict, rng: random.Random, depth: int) -> dict:
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    out = {}
    for name, sub in properties.items():
        if name in required or rng.random() < 0.5:
            out[name] = _value(sub, rng, depth + 1)
    return out


def _string(schema: dict, rng: random.Random) -> str:
    fmt = schema.get("format")
    if fmt == "date":
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if fmt == "date-time":
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
    if fmt == "email":
        return f"{rng.choice(_WORDS).lower()}@example.com"
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))
    low = int(schema.get("minLength", 0))
    high = schema.get("maxLength")
    if len(text) < low:
        text = text + "x" * (low - len(text))
    if high is not None:
        text = text[: int(high)]
    return text


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        if key == "properties":
            out["properties"] = {**a.get("properties", {}), **value}
        elif key == "required":
            out["required"] = list(a.get("required", [])) + list(value)
        else:
            out[key] = value
    return out
