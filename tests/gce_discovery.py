"""The compute v1 discovery document as a strict request checker: route a request to its method,
validate bodies against the method's `$ref` schema (unknown fields, wrong types, bad enums fail)."""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import googleapiclient

DISCOVERY = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "compute.v1.json"


@functools.lru_cache(maxsize=1)
def load_discovery() -> dict:
    """Parsed once per test session (the document is large); treat it as read-only."""
    return json.loads(DISCOVERY.read_text())


def validate(value, schema: dict, schemas: dict, where: str) -> list[str]:
    """Check `value` against a discovery-document schema; return the problems found."""
    if "$ref" in schema:
        return validate(value, schemas[schema["$ref"]], schemas, where)
    t = schema.get("type")
    errs: list[str] = []
    if t == "object":
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            if k in props:
                errs += validate(v, props[k], schemas, f"{where}.{k}")
            elif extra is not None:
                errs += validate(v, extra, schemas, f"{where}[{k!r}]")
            else:
                errs.append(f"{where}: unknown field {k!r}")
    elif t == "array":
        if not isinstance(value, list):
            return [f"{where}: expected an array, got {type(value).__name__}"]
        for i, v in enumerate(value):
            errs += validate(v, schema.get("items", {}), schemas, f"{where}[{i}]")
    elif t == "string":
        if schema.get("format") in ("int64", "uint64"):
            # JSON clients may send 64-bit integers as numbers or decimal strings
            if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str)
                                                                           and re.fullmatch(r"-?\d+", value))):
                errs.append(f"{where}: expected an int64 (number or decimal string), got {value!r}")
        elif not isinstance(value, str):
            errs.append(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        elif "enum" in schema and value not in schema["enum"]:
            errs.append(f"{where}: {value!r} is not one of {schema['enum']}")
    elif t == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            errs.append(f"{where}: expected an integer, got {value!r}")
    elif t == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errs.append(f"{where}: expected a number, got {value!r}")
    elif t == "boolean":
        if not isinstance(value, bool):
            errs.append(f"{where}: expected a boolean, got {value!r}")
    return errs


class _Routes:
    def __init__(self, doc: dict):
        self.doc = doc
        self.routes = []
        self._walk(doc.get("resources", {}))
        # fewer placeholders first: a literal segment beats a parameter
        self.routes.sort(key=lambda r: r[1].pattern.count("[^/]+"))

    def _walk(self, resources: dict):
        for res in resources.values():
            for m in res.get("methods", {}).values():
                tmpl = m.get("flatPath", m["path"])
                names = re.findall(r"\{(\w+)\}", tmpl)
                rx = re.compile("^/compute/v1/" + re.sub(r"\\\{\w+\\\}", "([^/]+)", re.escape(tmpl)) + "$")
                self.routes.append((m["httpMethod"], rx, names, m))
            self._walk(res.get("resources", {}))

    def match(self, verb: str, path: str):
        for method, rx, names, m in self.routes:
            if method == verb:
                hit = rx.match(path)
                if hit:
                    return m, dict(zip(names, hit.groups()))
        return None, None


@functools.lru_cache(maxsize=1)
def _routes() -> _Routes:
    return _Routes(load_discovery())
