# Seeded JSON values that satisfy a JSON Schema: tool-call arguments and structured output (pure).
from __future__ import annotations

import random
import string
from collections.abc import Mapping
from typing import Any

# Words for generated strings: ASCII only, so a schema's maxLength counts what a client counts.
_WORDS = (
    "sheep",
    "trio",
    "stream",
    "nursery",
    "deadline",
    "relay",
    "budget",
    "meadow",
    "wool",
    "socket",
    "token",
    "owner",
)
# Nesting deeper than this gets the smallest value the schema allows: recursive schemas
# (a tree whose children are trees) would otherwise never end.
_MAX_DEPTH = 6
# A schema with no finite instance (a required child of its own type) stops here, invalid but
# bounded: the server must answer whatever the client sends.
_HARD_DEPTH = 24
_MAX_ITEMS = 3
_FORMATS = {
    "date-time": "2025-04-14T09:30:00Z",
    "date": "2025-04-14",
    "time": "09:30:00",
    "email": "shepherd@example.com",
    "uri": "https://example.com/sheep",
    "uuid": "7f1d9c2e-4b1a-4c3e-9a55-2f6d8e0b1c3a",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
}


class SchemaValues:
    """Builds values for JSON Schemas from one seeded RNG, resolving local ``$ref`` pointers.

    Supports what function parameters and structured-output schemas use: ``type`` (one or a
    list), ``properties`` / ``required``, ``items`` / ``prefixItems`` / ``minItems`` /
    ``maxItems``, ``enum``, ``const``, ``anyOf`` / ``oneOf`` / ``allOf``, ``$ref`` into
    ``$defs`` / ``definitions``, numeric bounds, string lengths and common formats. Objects get
    their required properties (all properties when ``required`` is absent); anything else
    defaults to a short string.
    """

    def __init__(self, root: Any, rng: random.Random) -> None:
        self._root = root
        self._rng = rng

    def value(self) -> Any:
        """A value for the root schema."""
        return self._value(self._root, 0)

    def _resolve(self, schema: Any, depth: int) -> Any:
        # Follow `$ref` chains with a bound, so `{"$ref": "#"}` loops cannot hang the server.
        for _ in range(_MAX_DEPTH):
            if not isinstance(schema, Mapping) or not isinstance(schema.get("$ref"), str):
                return schema
            schema = self._pointer(schema["$ref"])
        return {}

    def _pointer(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}
        node: Any = self._root
        for part in ref[1:].split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return {}
        return node

    def _value(self, schema: Any, depth: int) -> Any:
        if depth > _HARD_DEPTH:
            return None
        schema = self._resolve(schema, depth)
        if not isinstance(schema, Mapping):
            return self._words(1, 3)  # `true` or a malformed schema: anything goes
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return self._rng.choice(enum)
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return self._value(self._choose_option(options, depth), depth + 1)
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            merged: dict[str, Any] = {}
            for part in all_of:
                part = self._resolve(part, depth)
                if isinstance(part, Mapping):
                    _merge(merged, part)
            rest = {key: value for key, value in schema.items() if key != "allOf"}
            _merge(merged, rest)
            return self._value(merged, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if isinstance(k, str)]
            # Prefer a real value over null: "string or null" should usually be a string.
            useful = [k for k in kinds if k != "null"] or kinds or ["string"]
            kind = useful[0] if depth >= _MAX_DEPTH else self._rng.choice(useful)
        if kind is None:
            if "properties" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            else:
                kind = "string"
        return self._typed(kind, schema, depth)

    def _choose_option(self, options: list[Any], depth: int) -> Any:
        if depth >= _MAX_DEPTH:
            # Deep down, take the option that ends the recursion soonest (null, a scalar).
            for option in options:
                resolved = self._resolve(option, depth)
                if isinstance(resolved, Mapping) and resolved.get("type") in (
                    "null",
                    "string",
                    "integer",
                    "number",
                    "boolean",
                ):
                    return resolved
        return self._rng.choice(options)

    def _typed(self, kind: str, schema: Mapping[str, Any], depth: int) -> Any:
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "integer":
            low, high = _bounds(schema, integer=True)
            return self._rng.randint(int(low), int(high))
        if kind == "number":
            low, high = _bounds(schema, integer=False)
            return round(self._rng.uniform(low, high), 2)
        if kind == "boolean":
            return self._rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema)

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            properties = {}
        required = schema.get("required")
        if isinstance(required, list):
            names = [name for name in required if isinstance(name, str)]
        else:
            names = list(properties)
        if depth >= _MAX_DEPTH and not isinstance(required, list):
            names = []  # deep down, only what the schema requires
        result: dict[str, Any] = {}
        for name in names:
            result[name] = self._value(properties.get(name, {}), depth + 1)
        return result

    def _array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [self._value(item, depth + 1) for item in prefix]
        low = schema.get("minItems")
        high = schema.get("maxItems")
        low = low if isinstance(low, int) and not isinstance(low, bool) and low >= 0 else 0
        high = high if isinstance(high, int) and not isinstance(high, bool) else low + _MAX_ITEMS
        low = min(low, 64)  # bounded output whatever the schema asks
        high = max(low, min(high, low + _MAX_ITEMS))
        if depth >= _MAX_DEPTH:
            high = low
        count = self._rng.randint(max(low, min(1, high)), high)
        return [self._value(schema.get("items", {}), depth + 1) for _ in range(count)]

    def _string(self, schema: Mapping[str, Any]) -> str:
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            return _FORMATS[fmt]
        low = schema.get("minLength")
        high = schema.get("maxLength")
        low = low if isinstance(low, int) and not isinstance(low, bool) and low > 0 else 0
        high = high if isinstance(high, int) and not isinstance(high, bool) else None
        text = self._words(1, 4)
        if high is not None and len(text) > high:
            text = text[: max(high, 0)]
        if len(text) < low:
            letters = string.ascii_lowercase
            text += "".join(self._rng.choice(letters) for _ in range(min(low, 4096) - len(text)))
        return text

    def _words(self, low: int, high: int) -> str:
        return " ".join(self._rng.choice(_WORDS) for _ in range(self._rng.randint(low, high)))


def _merge(into: dict[str, Any], part: Mapping[str, Any]) -> None:
    for key, value in part.items():
        if key == "properties" and isinstance(value, Mapping):
            into.setdefault("properties", {})
            into["properties"] = {**into["properties"], **value}
        elif key == "required" and isinstance(value, list):
            into["required"] = [*into.get("required", []), *value]
        else:
            into.setdefault(key, value)


def _bounds(schema: Mapping[str, Any], *, integer: bool) -> tuple[float, float]:
    def number(key: str) -> float | None:
        value = schema.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)

    low = number("minimum")
    high = number("maximum")
    exclusive_low = number("exclusiveMinimum")
    exclusive_high = number("exclusiveMaximum")
    step = 1.0 if integer else 0.01
    if exclusive_low is not None:
        low = max(low, exclusive_low + step) if low is not None else exclusive_low + step
    if exclusive_high is not None:
        high = min(high, exclusive_high - step) if high is not None else exclusive_high - step
    if low is None and high is None:
        low, high = 0.0, 100.0
    elif low is None:
        assert high is not None
        low = high - 100.0
    elif high is None:
        high = low + 100.0
    if integer:
        low, high = float(_ceil(low)), float(_floor(high))
    if high < low:
        high = low  # contradictory bounds: the lower one, rather than a crash
    return low, high


def _ceil(value: float) -> int:
    whole = int(value)
    return whole + 1 if whole < value else whole


def _floor(value: float) -> int:
    whole = int(value)
    return whole - 1 if whole > value else whole


def value_for_schema(schema: Any, rng: random.Random) -> Any:
    """A JSON value for ``schema``, drawn from ``rng``.

    Args:
        schema: A JSON Schema (a mapping; anything else is treated as "any value").
        rng: The seeded RNG; the same seed gives the same value.

    Returns:
        A JSON-serializable value of the schema's type, with every required property.
    """
    return SchemaValues(schema, rng).value()


def split_pieces(text: str, rng: random.Random) -> tuple[str, ...]:
    """Cut ``text`` into pieces of 1-6 characters, as a model streams JSON token by token.

    Args:
        text: The whole text.
        rng: The seeded RNG deciding the cut points.

    Returns:
        The pieces; joined, they are ``text``.
    """
    pieces: list[str] = []
    position = 0
    while position < len(text):
        size = rng.randint(1, 6)
        pieces.append(text[position : position + size])
        position += size
    return tuple(pieces)
