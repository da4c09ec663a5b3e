"""The bench's own agents (`AGENTS_MODULE=bench.agents`, with the repository on PYTHONPATH):
`blobs`, whose tool returns as much text as the fake model asks for (`prompt(tool="blob",
kilobytes=K)`), so the hostile workload can make runs with large tool outputs."""

from __future__ import annotations

from app import Agent, tool

# Printable text, as a real tool's output would be; 64 bytes, so K KiB are 16 K lines.
LINE = "the quick brown fox jumps over the lazy dog, 0123456789 abcdefg\n"


@tool(effect="read")
def blob(kilobytes: int) -> str:
    """Return text of the given size.

    Args:
        kilobytes: How much text, in KiB.
    """
    return LINE * (kilobytes * 1024 // len(LINE))


blobs = Agent(
    name="blobs",
    description="Returns large tool outputs.",
    instructions="Call blob as asked.",
    tools=[blob],
)

agents = [blobs]
