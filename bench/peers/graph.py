"""The LangGraph peer: langgraph's prebuilt tool-calling (ReAct) agent with the one tool `add`,
its model the same fake as ours (OPENAI_BASE_URL), served by `langgraph dev` with the config
`bench.workloads.langgraph` writes."""

from __future__ import annotations

import os

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.prebuilt import create_react_agent


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


model = ChatOpenAI(
    model="bench",
    base_url=os.environ["OPENAI_BASE_URL"],
    api_key="unused",
    max_retries=0,
    streaming=True,  # as our engine always streams
    stream_usage=True,
)
graph = create_react_agent(model, tools=[add], prompt="You add numbers. Use the add tool.")
