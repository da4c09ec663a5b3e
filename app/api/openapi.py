"""The OpenAPI document: every error answer is problem+json, and `openapi.yaml` is generated
from it (never edited by hand)."""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def problem_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with every 4xx/5xx answer as `application/problem+json`."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                # Any URL may be refused as malformed (a NUL character, say) before routing.
                operation.setdefault("responses", {}).setdefault(
                    "400", {"description": "Bad Request"}
                )
                for status, response in operation.get("responses", {}).items():
                    if int(status) >= 400:
                        response["content"] = {
                            "application/problem+json": {"schema": dict(PROBLEM_REF)}
                        }
        _drop_unreferenced_schemas(document)
        app.openapi_schema = document
    return app.openapi_schema


def _drop_unreferenced_schemas(document: dict[str, Any]) -> None:
    """FastAPI lists schemas nothing refers to (its validation errors, replaced by the problem;
    the types behind fields whose schema is given inline)."""
    schemas = document.get("components", {}).get("schemas", {})
    while True:
        paths_and_others = {key: value for key, value in document.items() if key != "components"}
        used = _references([paths_and_others, *schemas.values()])
        unused = [name for name in schemas if f"#/components/schemas/{name}" not in used]
        if not unused:
            return
        for name in unused:
            del schemas[name]


def _references(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["$ref"]} if isinstance(value.get("$ref"), str) else set()
        return found.union(*(_references(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(_references(item) for item in value))
    return set()


def openapi_yaml(app: FastAPI) -> str:
    """The committed `openapi.yaml`, of an app built with default settings (building the
    document needs no database and no agents)."""
    return yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True, width=100)
