"""Validating our responses against OpenAI's published OpenAPI schemas (tests/data copy)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

SPEC_PATH = Path(__file__).parent / "data" / "openai-openapi.yaml"
CACHE_PATH = Path(__file__).parent.parent / ".pytest_cache" / "openai-components.json"


@functools.cache
def _components() -> dict[str, Any]:
    stamp = f"3.1-nulls:{SPEC_PATH.stat().st_mtime_ns}"
    if CACHE_PATH.exists():
        cached = json.loads(CACHE_PATH.read_text())
        if cached.get("stamp") == stamp:
            return cached["components"]
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    components = _nullable_to_null(yaml.load(SPEC_PATH.read_text(), Loader=loader)["components"])
    CACHE_PATH.parent.mkdir(exist_ok=True)
    CACHE_PATH.write_text(json.dumps({"stamp": stamp, "components": components}, default=str))
    return components


def _nullable_to_null(node: Any) -> Any:
    """The file mixes OpenAPI 3.0 ``nullable: true`` with 3.1 ``type: null``; make it all 3.1."""
    if isinstance(node, list):
        return [_nullable_to_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable_to_null(value) for key, value in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


def assert_matches_openai(instance: Any, schema_name: str) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``instance`` fits OpenAI's ``schema_name``."""
    root = {"components": _components(), "$ref": f"#/components/schemas/{schema_name}"}
    Draft202012Validator(root).validate(instance)
