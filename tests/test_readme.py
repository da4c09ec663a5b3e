"""The README stays honest about what the service reads."""

from __future__ import annotations

import json

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
