"""`openapi.yaml` is the app's document, byte for byte; regenerate it, never edit it."""

from __future__ import annotations

from app.api.app import create_app
from app.api.openapi import openapi_yaml
from app.settings import Settings
from tests.conftest import ROOT

REGENERATE = "uv run agent-runs openapi --output openapi.yaml"


def committed_document() -> str:
    return openapi_yaml(create_app(Settings(_env_file=None)))


def test_openapi_yaml_matches_the_app() -> None:
    committed = (ROOT / "openapi.yaml").read_text()

    assert committed == committed_document(), f"openapi.yaml is stale: run `{REGENERATE}`"


def test_every_error_answer_is_a_problem() -> None:
    import yaml

    document = yaml.safe_load(committed_document())
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], (
                        method,
                        path,
                        status,
                    )
    assert "HTTPValidationError" not in document["components"]["schemas"]
