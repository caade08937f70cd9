"""The JSON Schemas in ``schemas/`` (installed as ``confidently.schemas``), and validation against them."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """A schema by name, e.g. ``image-record`` for ``schemas/image-record.schema.json``."""
    text = resources.files("confidently.schemas").joinpath(f"{name}.schema.json").read_text()
    return json.loads(text)


@functools.cache
def _validator(name: str):
    import jsonschema

    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_errors(instance: Any, name: str) -> list[str]:
    """Every way ``instance`` breaks schema ``name``, as 'path: message' lines (empty when valid)."""
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
