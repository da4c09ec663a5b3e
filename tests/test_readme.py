"""The README stays honest about what the service reads."""

from __future__ import annotations

import json
from typing import Any

from app.api.auth import Keys
from app.settings import Settings
from tests.conftest import ROOT


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in table]
    assert missing == []


def test_the_model_servers_example_is_valid_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Model servers", 1)[1].split("\n## ", 1)[0]
    # Exported, so the commands run after it in the same shell see it.
    example = section.split("export MODEL_PROVIDERS='", 1)[1].split("'", 1)[0]

    providers = Settings(model_providers=json.loads(example)).model_providers

    assert sorted(providers) == ["anthropic", "azure", "ollama", "vllm"]
    assert providers["anthropic"].kind == "anthropic"
    assert providers["azure"].api_key_header == "api-key"


def test_the_production_callers_example_is_valid_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("**Callers and tenants.**", 1)[1].split("```sh\n", 1)[1]
    lines = section.split("```", 1)[0].splitlines()
    environment: dict[str, Any] = dict(line.split("=", 1) for line in lines)

    settings = Settings(
        _env_file=None, **{name.lower(): value for name, value in environment.items()}
    )
    keys = Keys.from_settings(settings)

    def who(key: str) -> tuple[str, str, frozenset[str]]:
        found = keys.match(key)
        assert found is not None, key
        return found.principal.tenant, found.principal.name, found.principal.roles

    assert who("globex-backend-key-change-me") == ("globex", "backend", frozenset())
    assert who("acme-support-key-change-me") == ("acme", "support", frozenset({"approver"}))
    assert who("ops-oncall-key-change-me") == ("ops", "oncall", frozenset({"admin"}))
    assert keys.tokens is not None
