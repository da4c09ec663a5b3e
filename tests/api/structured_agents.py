"""Agents with structured output, registered by the structured-output API tests."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from app import Agent

SUM_SCHEMA = {
    "title": "Sum",
    "type": "object",
    "properties": {"total": {"type": "integer"}},
    "required": ["total"],
}


class Weather(BaseModel):
    city: str
    celsius: float


@dataclass
class Point:
    x: int
    y: int


weather = Agent(name="weather", model="w", output_type=Weather)
point = Agent(name="point", model="p", output_type=Point)
summer = Agent(name="summer", model="s", output_type=SUM_SCHEMA)
triage = Agent(name="triage", model="t", handoffs=[weather])
plain = Agent(name="plain", model="m")
tooled = Agent(name="tooled", model="tools/tm", output_type=SUM_SCHEMA)

agents = [weather, point, summer, triage, plain, tooled]
