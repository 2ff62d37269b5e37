"""A small JSON Schema subset: make an instance, validate one, and spoil one.

Covers what answer schemas commonly use: `type` (one or a list), `enum`, `const`,
`properties` / `required` / `additionalProperties`, `items` / `prefixItems` /
`minItems` / `maxItems` / `uniqueItems`, `minimum` / `maximum` / `exclusiveMinimum` /
`exclusiveMaximum` / `multipleOf`, `minLength` / `maxLength` / `pattern`, `format`
(generated plausibly, not asserted, as validators do by default), `anyOf` / `oneOf` /
`allOf` / `not`, local `$ref` (`#/$defs/...`, `#/definitions/...`) and OpenAPI's
`nullable`. Keywords outside it are ignored by both sides. `instance` fills every
property (required ones first), strings from the words it is given. `spoiled` returns
near misses (a required property left out, a value of the wrong type, a value outside
an enum or a bound) for the caller to check with `errors`. Pure: no state, no I/O.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

from harness.simulator import regexgen

__all__ = ["errors", "instance", "spoiled"]

_DEPTH = 6
_MAX_ITEMS = 100  # generated arrays and strings stay this short whatever the schema's minimum
_MAX_CHARS = 10_000
_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
_FORMATS = {
    "date": lambda r: f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "date-time": lambda r: (
        f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:{r.choice((0, 15, 30, 45)):02d}:00Z"
    ),
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.choice((0, 15, 30, 45)):02d}:00",
    "email": lambda r: f"{r.choice(('alex', 'sam', 'kim', 'jo'))}@example.com",
    "uri": lambda r: f"https://example.com/{r.choice(('docs', 'items', 'about'))}",
    "url": lambda r: f"https://example.com/{r.choice(('docs', 'items', 'about'))}",
    "uuid": lambda r: (
        f"{r.getrandbits(32):08x}-{r.getrandbits(16):04x}-4{r.getrandbits(12):03x}"
        f"-a{r.getrandbits(12):03x}-{r.getrandbits(48):012x}"
    ),
    "ipv4": lambda r: f"192.0.2.{r.randint(1, 254)}",
}


def _dict(schema: dict[str, Any], key: str) -> dict[str, Any]:
    value = schema.get(key)
    return value if isinstance(value, dict) else {}


def _list(schema: dict[str, Any], key: str) -> list[Any]:
    value = schema.get(key)
    return value if isinstance(value, list) else []


def _int(schema: dict[str, Any], key: str) -> int | None:
    value = schema.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _resolve(schema: Any, root: Any, depth: int = 0) -> Any:
    """Follow a local `$ref` (a JSON pointer into the root schema)."""
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and depth < _DEPTH:
        ref = schema["$ref"]
        if not ref.startswith("#"):
            return {}
        target: Any = root
        for part in ref[1:].split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            else:
                return {}
        schema = target
        depth += 1
    return schema


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type")
    kinds = [kind] if isinstance(kind, str) else [k for k in kind if isinstance(k, str)] if kind else []
    if schema.get("nullable") is True and kinds and "null" not in kinds:
        kinds.append("null")
    return kinds


def _guess_type(schema: dict[str, Any]) -> str:
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "multipleOf")):
        return "number"
    return "string"


# ---------------------------------------------------------------- validation


def _is_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if kind == "integer":
        return isinstance(value, int) or (math.isfinite(value) and value == int(value))
    return kind == "number"


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0 but True != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def errors(schema: Any, value: Any, root: Any = None, path: str = "$") -> list[str]:
    """What is wrong with `value` under `schema` (empty when it validates)."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if schema is False:
        return [f"{path}: no value is allowed"]
    if not isinstance(schema, dict):
        return []
    found: list[str] = []
    kinds = _types(schema)
    if kinds and not any(_is_type(value, k) for k in kinds):
        return [f"{path}: expected {' or '.join(kinds)}"]
    if "const" in schema and not _equal(value, schema["const"]):
        found.append(f"{path}: must equal {schema['const']!r}")
    enum = schema.get("enum")
    if isinstance(enum, list) and not any(_equal(value, e) for e in enum):
        found.append(f"{path}: not one of the enum values")
    if isinstance(value, dict):
        found += _object_errors(schema, value, root, path)
    elif isinstance(value, list):
        found += _array_errors(schema, value, root, path)
    elif isinstance(value, str):
        found += _string_errors(schema, value, path)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        found += _number_errors(schema, value, path)
    for key in ("allOf", "anyOf", "oneOf"):
        options = schema.get(key)
        if not isinstance(options, list) or not options:
            continue
        passing = sum(not errors(s, value, root, path) for s in options)
        if (
            (key == "allOf" and passing < len(options))
            or (key == "anyOf" and passing == 0)
            or (key == "oneOf" and passing != 1)
        ):
            found.append(f"{path}: fails {key}")
    if "not" in schema and not errors(schema["not"], value, root, path):
        found.append(f"{path}: matches `not`")
    return found


def _object_errors(schema: dict[str, Any], value: dict[str, Any], root: Any, path: str) -> list[str]:
    found = []
    properties = _dict(schema, "properties")
    for name in schema.get("required") or ():
        if name not in value:
            found.append(f"{path}: missing required property {name!r}")
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            found += errors(properties[name], item, root, f"{path}.{name}")
        elif extra is False:
            found.append(f"{path}: unexpected property {name!r}")
        elif isinstance(extra, dict):
            found += errors(extra, item, root, f"{path}.{name}")
    return found


def _array_errors(schema: dict[str, Any], value: list[Any], root: Any, path: str) -> list[str]:
    found = []
    low, high = _int(schema, "minItems"), _int(schema, "maxItems")
    if low is not None and len(value) < low:
        found.append(f"{path}: fewer than {low} items")
    if high is not None and len(value) > high:
        found.append(f"{path}: more than {high} items")
    prefix = _list(schema, "prefixItems")
    items = schema.get("items")
    for i, item in enumerate(value):
        sub = prefix[i] if i < len(prefix) else items
        if isinstance(sub, dict | bool):
            found += errors(sub, item, root, f"{path}[{i}]")
    if schema.get("uniqueItems") is True:
        for i, item in enumerate(value):
            if any(_equal(item, other) for other in value[:i]):
                found.append(f"{path}: items are not unique")
                break
    return found


def _string_errors(schema: dict[str, Any], value: str, path: str) -> list[str]:
    found = []
    low, high = _int(schema, "minLength"), _int(schema, "maxLength")
    if low is not None and len(value) < low:
        found.append(f"{path}: shorter than {low}")
    if high is not None and len(value) > high:
        found.append(f"{path}: longer than {high}")
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            if re.search(pattern, value) is None:
                found.append(f"{path}: does not match {pattern!r}")
        except re.error:
            pass
    return found


def _number_errors(schema: dict[str, Any], value: float, path: str) -> list[str]:
    found = []

    def bound(key: str) -> float | None:
        b = schema.get(key)
        return b if isinstance(b, int | float) and not isinstance(b, bool) else None

    low, high = bound("minimum"), bound("maximum")
    xlow, xhigh = bound("exclusiveMinimum"), bound("exclusiveMaximum")
    step = bound("multipleOf")
    if low is not None and value < low:
        found.append(f"{path}: below {low}")
    if high is not None and value > high:
        found.append(f"{path}: above {high}")
    if xlow is not None and value <= xlow:
        found.append(f"{path}: not above {xlow}")
    if xhigh is not None and value >= xhigh:
        found.append(f"{path}: not below {xhigh}")
    if step and abs(value / step - round(value / step)) > 1e-9:
        found.append(f"{path}: not a multiple of {step}")
    return found


# ---------------------------------------------------------------- generation


def instance(schema: Any, rng: random.Random, words: list[str], root: Any = None, depth: int = 0) -> Any:
    """A value that validates under `schema` for the subset above (check with `errors`)."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    words = words or ["example"]
    if not isinstance(schema, dict):
        return rng.choice(words)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            merged = {k: v for k, v in schema.items() if k != key}
            return instance({**merged, **_resolve(options[0], root)}, rng, words, root, depth)
    if isinstance(schema.get("allOf"), list):
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve(part, root)
            if isinstance(part, dict):
                merged = _merge(merged, part)
        return instance(merged, rng, words, root, depth)
    kinds = [k for k in _types(schema) if k != "null"] or (["null"] if _types(schema) else [])
    kind = kinds[0] if kinds else _guess_type(schema)
    if kind == "object":
        return _object(schema, rng, words, root, depth)
    if kind == "array":
        return _array(schema, rng, words, root, depth)
    if kind in ("integer", "number"):
        return _number(schema, kind, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, rng, words)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if key == "properties" and isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        elif key == "required" and isinstance(out.get(key), list) and isinstance(value, list):
            out[key] = list(dict.fromkeys([*out[key], *value]))
        else:
            out[key] = value
    return out


def _object(schema: dict[str, Any], rng: random.Random, words: list[str], root: Any, depth: int) -> Any:
    properties = _dict(schema, "properties")
    required = [n for n in schema.get("required") or () if isinstance(n, str)]
    if depth >= _DEPTH:
        names = required
    else:
        names = list(dict.fromkeys([*required, *properties]))
    out: dict[str, Any] = {}
    for name in names[:24]:
        sub = properties.get(name, schema.get("additionalProperties", {}))
        out[name] = instance(sub if isinstance(sub, dict) else {}, rng, words, root, depth + 1)
    return out


def _array(schema: dict[str, Any], rng: random.Random, words: list[str], root: Any, depth: int) -> Any:
    prefix = _list(schema, "prefixItems")
    low = _int(schema, "minItems")
    low = 1 if low is None else low
    high = _int(schema, "maxItems")
    high = max(low, 3) if high is None else high
    count = max(len(prefix), min(high, max(low, rng.randint(1, 3)))) if depth < _DEPTH else low
    count = min(count, _MAX_ITEMS)
    items = _dict(schema, "items")
    out: list[Any] = []
    for i in range(count):
        sub = prefix[i] if i < len(prefix) else items
        for _ in range(8):
            value = instance(sub, rng, words, root, depth + 1)
            if schema.get("uniqueItems") is not True or not any(_equal(value, o) for o in out):
                break
        out.append(value)
    return out


def _number(schema: dict[str, Any], kind: str, rng: random.Random) -> int | float:
    def bound(key: str) -> float | None:
        b = schema.get(key)
        return float(b) if isinstance(b, int | float) and not isinstance(b, bool) else None

    low, high = bound("minimum"), bound("maximum")
    xlow, xhigh = bound("exclusiveMinimum"), bound("exclusiveMaximum")
    step = bound("multipleOf")
    lo = low if low is not None else (xlow + (1 if kind == "integer" else 0.5) if xlow is not None else None)
    hi = (
        high
        if high is not None
        else (xhigh - (1 if kind == "integer" else 0.5) if xhigh is not None else None)
    )
    if lo is None and hi is None:
        lo, hi = 1.0, 100.0
    elif lo is None:
        assert hi is not None
        lo = hi - 100
    elif hi is None:
        hi = lo + 100
    if kind == "integer":
        a, b = math.ceil(lo), math.floor(hi)
        if step:
            k = math.ceil(a / step)
            multiples = [int(m * step) for m in range(k, k + 50) if m * step <= b]
            return rng.choice(multiples) if multiples else a
        return rng.randint(a, b) if a <= b else a
    if step:
        k = math.ceil(lo / step)
        top = max(k, math.floor(hi / step))
        return round(rng.randint(k, min(top, k + 50)) * step, 10)
    value = round(rng.uniform(lo, hi), 2)
    return min(max(value, lo), hi)


def _string(schema: dict[str, Any], rng: random.Random, words: list[str]) -> str:
    fmt = schema.get("format")
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        for _ in range(8):
            text = regexgen.matching(pattern, rng)
            try:
                if re.search(pattern, text):
                    break
            except re.error:
                break
    elif isinstance(fmt, str) and fmt in _FORMATS:
        text = _FORMATS[fmt](rng)
    else:
        text = " ".join(rng.sample(words, min(len(words), rng.randint(1, 2))))
    low = _int(schema, "minLength") or 0
    high = _int(schema, "maxLength")
    while len(text) < min(low, _MAX_CHARS):
        text += " " + rng.choice(words)
    if high is not None and len(text) > high:
        text = text[:high].rstrip() or text[:high]
    return text


# ---------------------------------------------------------------- near misses


def spoiled(schema: Any, value: Any, rng: random.Random, root: Any = None) -> list[Any]:
    """Near misses of a valid `value`, in random order, for the caller to check with `errors`:
    a required property missing, a value of the wrong type, a value outside its enum or bounds."""
    root = schema if root is None else root
    options: list[Any] = []
    for path, sub in _walk(schema, value, root, ()):
        sub = _resolve(sub, root)
        if not isinstance(sub, dict):
            continue
        current = _get(value, path)
        if isinstance(current, dict):
            for name in sub.get("required") or ():
                if name in current:
                    options.append(_set(value, path, {k: v for k, v in current.items() if k != name}))
        for wrong in _wrong_values(sub, current, rng):
            options.append(_set(value, path, wrong))
    rng.shuffle(options)
    return options


def _walk(schema: Any, value: Any, root: Any, path: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], Any]]:
    found = [(path, schema)]
    schema = _resolve(schema, root)
    if not isinstance(schema, dict) or len(path) > _DEPTH:
        return found
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        for name, sub in schema["properties"].items():
            if name in value:
                found += _walk(sub, value[name], root, (*path, name))
    elif isinstance(value, list) and value and isinstance(schema.get("items"), dict):
        found += _walk(schema["items"], value[0], root, (*path, 0))
    return found


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _set(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _set(value[head], rest, new)}
    copy = list(value)
    copy[head] = _set(copy[head], rest, new)
    return copy


def _wrong_values(schema: dict[str, Any], current: Any, rng: random.Random) -> list[Any]:
    wrong: list[Any] = []
    kinds = _types(schema)
    if isinstance(current, bool):
        wrong.append("yes" if current else "no")
    elif isinstance(current, int | float):
        wrong.append(str(current))  # a number sent as a string
        for key, sign in (("maximum", 1), ("minimum", -1)):
            b = schema.get(key)
            if isinstance(b, int | float) and not isinstance(b, bool):
                wrong.append(b + sign * max(1, abs(b) // 10))
    elif isinstance(current, str):
        if isinstance(schema.get("enum"), list):
            wrong.append(current.upper() if current.upper() != current else current.lower() + "_other")
            wrong.append("other")
        if "integer" in kinds or "number" in kinds or "string" in kinds:
            wrong.append(len(current) or 1)  # a string given as a number
    elif isinstance(current, list):
        wrong.append(current[0] if current else "")  # one item instead of a list
    elif isinstance(current, dict) and current:
        wrong.append(next(iter(current.values())))
    return wrong
