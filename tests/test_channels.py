"""The LISTEN/NOTIFY channel: payloads within PostgreSQL's limits, connection options."""

from __future__ import annotations

import json

from app.store.channels import PAYLOAD_LIMIT, DeltaChannel, _payloads
from app.store.database import Database


def test_payloads_stay_under_the_limit_and_keep_every_character() -> None:
    text = "é😀x" * 3000  # escaped JSON makes astral characters 12 bytes each
    batch = [("run_1", {"turn": 1, "attempt": 1, "text": text})]
    batch += [("run_1", {"turn": 1, "attempt": 1, "text": "tail"})]
    batch += [("run_2", {"turn": 2, "attempt": 1, "text": "other"})]

    payloads = _payloads("me", batch)

    assert all(len(payload.encode()) < PAYLOAD_LIMIT for payload in payloads)
    deltas = [item for payload in payloads for item in json.loads(payload)["deltas"]]
    assert "".join(d["text"] for run, d in deltas if run == "run_1") == text + "tail"
    assert [d["text"] for run, d in deltas if run == "run_2"] == ["other"]
    assert all(json.loads(payload)["origin"] == "me" for payload in payloads)


def test_consecutive_deltas_of_a_turn_are_merged() -> None:
    batch = [("r", {"turn": 1, "attempt": 1, "text": t}) for t in ("a", "b", "c")]

    [payload] = _payloads("me", batch)

    assert json.loads(payload)["deltas"] == [["r", {"turn": 1, "attempt": 1, "text": "abc"}]]


def test_connection_options_only_sqlalchemy_knows_are_left_out() -> None:
    db = Database("postgresql://u:p@127.0.0.1:5/db?ssl=disable&prepared_statement_cache_size=0")

    channel = DeltaChannel(db, "me", None)

    assert channel._connect_arguments == {
        "host": "127.0.0.1",
        "port": 5,
        "user": "u",
        "password": "p",
        "database": "db",
        "ssl": "disable",
    }
