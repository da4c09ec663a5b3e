"""The demo model plays the bundled agents on a first run, and only then; it reads the
conversation. A default provider with no key says which setting to set."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from pydantic import SecretStr

from app.engine import ModelError, ModelRequest
from app.examples.demo_model import DemoModel
from app.runtime import banner
from app.runtime.agents import AgentsModule
from app.runtime.providers import MissingKey, build_providers
from app.settings import ProviderSettings, Settings

pytestmark = pytest.mark.anyio

TOOLS = [{"type": "function", "function": {"name": n}} for n in ("add", "delete_record")]


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


@pytest.mark.parametrize(
    ("values", "bundled", "demo"),
    [
        ({}, True, True),
        ({}, False, False),  # one's own agents
        ({"openai_api_key": SecretStr("sk-1")}, True, False),
        ({"openai_base_url": "http://127.0.0.1:1/v1"}, True, False),
        ({"model_providers": {"local": ProviderSettings(base_url="http://x/v1")}}, True, False),
    ],
)
def test_the_demo_model_only_on_a_first_run(
    values: dict[str, Any], bundled: bool, demo: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "MODEL_PROVIDERS"):
        monkeypatch.delenv(name, raising=False)
    default, _ = build_providers(settings(**values), demo=bundled)

    assert isinstance(default, DemoModel) is demo


async def test_no_key_for_openai_says_which_setting_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "MODEL_PROVIDERS"):
        monkeypatch.delenv(name, raising=False)
    default, _ = build_providers(settings(), demo=False)

    assert isinstance(default, MissingKey)
    with pytest.raises(ModelError, match="OPENAI_API_KEY is not set"):
        await default.complete(ModelRequest("gpt-4o-mini", []))


def assistant_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    function = {"name": name, "arguments": json.dumps(arguments)}
    return {
        "role": "assistant",
        "tool_calls": [{"id": "c1", "type": "function", "function": function}],
    }


async def answer(*messages: dict[str, Any]) -> dict[str, Any]:
    response = await DemoModel(pause=0).complete(ModelRequest("demo", list(messages), TOOLS))
    return response.message


async def test_it_adds_the_numbers_it_is_given() -> None:
    asked = {"role": "user", "content": "add 10 and 20"}
    first = await answer(asked)
    assert json.loads(first["tool_calls"][0]["function"]["arguments"]) == {"a": 10, "b": 20}

    done = await answer(
        asked,
        assistant_call("add", {"a": 10, "b": 20}),
        {"role": "tool", "tool_call_id": "c1", "content": "30"},
    )
    assert done["content"] == "10 + 20 = 30."


async def test_it_reports_a_rejection_and_its_reason() -> None:
    done = await answer(
        {"role": "user", "content": "delete record r_42"},
        assistant_call("delete_record", {"record_id": "r_42"}),
        {
            "role": "tool",
            "tool_call_id": "c1",
            "content": "The tool call was rejected and not run. Reason: keep it",
        },
    )

    assert done["content"] == (
        "I did not delete record r_42: the call was rejected. Reason given: keep it"
    )


async def test_it_reports_what_edited_arguments_did() -> None:
    done = await answer(
        {"role": "user", "content": "delete record r_42"},
        assistant_call("delete_record", {"record_id": "r_42"}),
        {"role": "tool", "tool_call_id": "c1", "content": "record r_99 deleted"},
    )

    assert done["content"] == "Done: record r_99 deleted."


async def test_a_provider_entry_with_no_key_for_openai_names_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    _, named = build_providers(
        settings(
            openai_base_url="http://127.0.0.1:1/v1",
            model_providers={
                "hosted": ProviderSettings(),
                "local": ProviderSettings(base_url="http://x/v1"),
            },
        )
    )

    assert not isinstance(named["local"], MissingKey)
    with pytest.raises(ModelError, match="MODEL_PROVIDERS entry 'hosted' has no api_key"):
        await named["hosted"].complete(ModelRequest("gpt-4o-mini", []))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_banner_on_a_terminal_says_whether_a_key_is_set_never_the_key() -> None:
    configured = settings(openai_api_key=SecretStr("sk-secret-1"))
    shown = Terminal()

    banner.show(banner.facts(configured, AgentsModule([], bundled=True), executor=True), shown)

    assert "OpenAI's API, key set" in shown.getvalue()
    assert "sk-secret-1" not in shown.getvalue()
    assert "demo model" not in shown.getvalue()


async def test_asked_for_structured_output_it_shapes_its_answer_to_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "sum": {"type": "integer"},
            "explanation": {"type": "string"},
            "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}},
        },
        "$defs": {"Step": {"type": "object", "properties": {"ok": {"type": "boolean"}}}},
    }
    messages = [
        {"role": "user", "content": "add 10 and 20"},
        assistant_call("add", {"a": 10, "b": 20}),
        {"role": "tool", "tool_call_id": "c1", "content": "30"},
    ]
    response_format = {"type": "json_schema", "json_schema": {"name": "Sum", "schema": schema}}
    request = ModelRequest("demo", messages, TOOLS, response_format=response_format)

    done = (await DemoModel(pause=0).complete(request)).message

    assert json.loads(done["content"]) == {
        "sum": 30,
        "explanation": "10 + 20 = 30.",
        "steps": [{"ok": True}],
    }


async def test_it_calls_a_tool_it_is_offered_when_asked_by_name() -> None:
    weather = {"type": "function", "function": {"name": "get_weather"}}
    asked = {"role": "user", "content": 'Please call get_weather with {"city": "Oslo"}'}
    request = ModelRequest("demo", [asked], [*TOOLS, weather])
    first = (await DemoModel(pause=0).complete(request)).message
    function = first["tool_calls"][0]["function"]
    assert (function["name"], json.loads(function["arguments"])) == (
        "get_weather",
        {"city": "Oslo"},
    )

    done = await answer(
        asked,
        assistant_call("get_weather", {"city": "Oslo"}),
        {"role": "tool", "tool_call_id": "c1", "content": "-3 C, snow"},
    )
    assert done["content"] == "get_weather gave: -3 C, snow."
    unknown = await answer({"role": "user", "content": "call get_weather"})
    assert unknown["content"].startswith("Hello! I am the demo model")
