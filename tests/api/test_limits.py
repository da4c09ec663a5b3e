"""What one client may cost the service: tool outputs cut at a limit, event streams bounded per
client and paged, request bodies that stall dropped (contract, "Text that can be stored, and
hostile clients")."""

from __future__ import annotations

import pytest

from app.testing import FakeModel, call, text
from tests.api.conftest import ClientFactory

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("fill", ["x", "é", "\U0001f600"])
async def test_a_tool_output_over_the_limit_is_cut_with_a_marker(
    make_client: ClientFactory, fake: FakeModel, fill: str
) -> None:
    fake.script("m", [call("long_text", {"kilobytes": 3000, "fill": fill}), text("read it")])
    async with make_client(max_tool_output_bytes=100_000) as client:
        created = await client.post(
            "/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"}
        )
    run = created.json()

    assert run["status"] == "completed"
    tool_call = run["steps"][0]["tool_calls"][0]
    assert tool_call["truncated"] is True
    output = tool_call["output"]
    kept, marker = output.rsplit("\n", 1)
    assert set(kept) == {fill}
    assert 100_000 - 4 < len(kept.encode()) <= 100_000  # cut on a character's edge
    cut = 3000 * 1024 // len(fill.encode()) * len(fill.encode()) - len(kept.encode())
    assert marker == (
        f"[output truncated: {cut} of {cut + len(kept.encode())} bytes cut at the limit of "
        "100000 bytes]"
    )
    # The model is sent the cut output, and the stored conversation holds the same.
    sent = fake.requests_for("m")[1]["messages"][-1]
    assert sent == {"role": "tool", "tool_call_id": tool_call["call_id"], "content": output}
    assert run["messages"][-2]["content"] == output


async def test_an_output_within_the_limit_is_whole(
    make_client: ClientFactory, fake: FakeModel
) -> None:
    fake.script("m", [call("long_text", {"kilobytes": 2}), text("read it")])
    async with make_client(max_tool_output_bytes=2048) as client:
        created = await client.post(
            "/runs", params={"wait": 10}, json={"agent": "calc", "input": "x"}
        )

    tool_call = created.json()["steps"][0]["tool_calls"][0]
    assert tool_call["truncated"] is False
    assert tool_call["output"] == "x" * 2048
