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
        schemas = document.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = document
    return app.openapi_schema


def openapi_yaml(app: FastAPI) -> str:
    """The committed `openapi.yaml`, of an app built with default settings (building the
    document needs no database and no agents)."""
    return yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True, width=100)
