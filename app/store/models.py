"""Tables of the store. Alembic migrations build them; a test proves the two agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.engine.principal import DEFAULT_TENANT


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps in UTC, aware when read back on SQLite too (it stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use an aware UTC datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants a BIGINT identity.
Serial = BigInteger().with_variant(Integer(), "sqlite")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def tenant_column(*, primary_key: bool = False) -> Mapped[str]:
    """The tenant a row belongs to; rows stored before tenants existed are `default`'s."""
    return mapped_column(String(64), primary_key=primary_key, server_default=DEFAULT_TENANT)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
    }


class Run(Base):
    """A run: its request, where it is, and the engine state stored after every turn. The
    state is kept without its conversation and with its last step only: the run's messages are
    `RunMessage` rows, its earlier steps `RunStep` rows, and a session's history is read from
    the session (`app.store.conversation`)."""

    __tablename__ = "runs"

    seq: Mapped[int] = mapped_column(Serial, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    tenant: Mapped[str] = tenant_column()
    # Who created the run, as `Principal.to_json` gives it: the identity its tools act with.
    principal: Mapped[dict[str, Any] | None]
    # Where the run stands in the queue: the claim takes the lowest first. A tenant's runs
    # line up one behind another from the queue's head, so each tenant's next run is near
    # the front whatever another's backlog (`app.store.lifecycle`'s `queue_rank`).
    queue_rank: Mapped[int] = mapped_column(BigInteger, server_default="0")
    status: Mapped[str] = mapped_column(String(20))
    agent: Mapped[str] = mapped_column(String(64))
    current_agent: Mapped[str] = mapped_column(String(64))
    # No foreign key: a forgotten (deleted) session leaves its runs labelled with it.
    session_id: Mapped[str | None] = mapped_column(String(128))
    input: Mapped[Any] = mapped_column(JSON)
    config: Mapped[dict[str, Any]]
    context: Mapped[dict[str, Any]]
    run_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    state: Mapped[dict[str, Any] | None]
    # The run's own structured-output schema, as posted: its state takes it when it starts.
    output_schema: Mapped[dict[str, Any] | None]
    # A structured output is stored as its JSON text; the run's state holds the value itself.
    final_output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[dict[str, Any] | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    event_seq: Mapped[int] = mapped_column(Integer, default=0)
    # The state's turns, beside it: an event stream reads them on every change, never the state.
    turns: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_token: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None]
    webhook: Mapped[str | None] = mapped_column(String(2048))
    # The run's own tools, which the client runs (`RunTool`s as JSON); null when it has none.
    tools: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # Claims of this run after its executor was lost, since it last made progress: a bound
    # stops a run that kills every executor that takes it.
    takeovers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]

    __table_args__ = (
        Index(None, "status", "seq"),
        Index(None, "session_id", "seq"),
        Index(None, "agent", "seq"),
        # A tenant's list, newest first: every caller but an admin lists its tenant's runs.
        Index(None, "tenant", "seq"),
        # The claim walks runs in queue order and stops at its limit (its condition, an OR of
        # two statuses, uses no index of its own); the queue's head is found by status.
        Index(None, "queue_rank", "seq"),
        Index(None, "status", "queue_rank"),
        Index(None, "tenant", "status", "queue_rank"),
        # Retention finds the runs of a status that ended longest ago.
        Index(None, "status", "finished_at"),
    )


class RunMessage(Base):
    """One message of a run's own conversation (its input and what followed), at its place in
    the conversation the model sees. Written once: a checkpoint adds only the new ones."""

    __tablename__ = "run_messages"

    run_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    message: Mapped[dict[str, Any]]
    # The run's event whose data holds this message's content (a tool output its
    # `tool_call.completed` event carried first); `message` then has its content as null.
    content_event: Mapped[int | None] = mapped_column(Integer)


class RunStep(Base):
    """One step of a run (a model call and its tool calls) that is no longer its last: the
    engine changes only its last step, so each earlier one is written once."""

    __tablename__ = "run_steps"

    run_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[dict[str, Any]]


class StoredEvent(Base):
    """One event of a run's log, numbered within the run."""

    __tablename__ = "run_events"

    id: Mapped[int] = mapped_column(Serial, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(40), ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]]
    # The length of the event's data as JSON, as read (a referenced message included): a
    # stream pages the log by it without reading any data.
    size: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A `message` event's message is the run's message at this place, not repeated in `data`.
    message_at: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("run_id", "seq"),)


class Session(Base):
    """A conversation that runs continue."""

    __tablename__ = "sessions"

    # Session ids are the client's, and two tenants may use the same.
    tenant: Mapped[str] = tenant_column(primary_key=True)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    # Retention finds the sessions idle longest.
    __table_args__ = (Index(None, "updated_at"),)


class SessionMessage(Base):
    """One message of a session's stored conversation, in order."""

    __tablename__ = "session_messages"

    id: Mapped[int] = mapped_column(Serial, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = tenant_column()
    session_id: Mapped[str] = mapped_column(String(128))
    position: Mapped[int] = mapped_column(Integer)
    message: Mapped[dict[str, Any]]
    run_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]

    # Ids never reused, SQLite's too: a run refers to its history as the messages up to an id,
    # and a forgotten session's ids must not come back as another conversation's.
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant", "session_id"], ["sessions.tenant", "sessions.id"], ondelete="CASCADE"
        ),
        UniqueConstraint("tenant", "session_id", "position"),
        {"sqlite_autoincrement": True},
    )


class IdempotencyKey(Base):
    """A client's `Idempotency-Key`, reserved by its first request and bound to its effect."""

    __tablename__ = "idempotency_keys"

    # Whose key it is: the caller's tenant and name ("" on an open service). Two callers may
    # use the same.
    tenant: Mapped[str] = tenant_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), primary_key=True)
    scope: Mapped[str] = mapped_column(String(80), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]

    # Forgetting a run forgets the keys bound to it; retention, the keys past their age.
    __table_args__ = (Index(None, "run_id"), Index(None, "created_at"))


class Approval(Base):
    """A tool call that waited (or waits) for a human's decision, for `GET /approvals`."""

    __tablename__ = "approvals"

    seq: Mapped[int] = mapped_column(Serial, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(40), ForeignKey("runs.id", ondelete="CASCADE"))
    tenant: Mapped[str] = tenant_column()
    call_id: Mapped[str] = mapped_column(String(100))
    tool: Mapped[str] = mapped_column(String(64))
    agent: Mapped[str] = mapped_column(String(64))
    # approval | external | guardrail: what the pending item waits for.
    kind: Mapped[str] = mapped_column(String(20), server_default="approval")
    arguments: Mapped[dict[str, Any]]
    # What a guardrail asks the person (kind guardrail); null for calls.
    reason: Mapped[str | None] = mapped_column(Text)
    in_doubt: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(20))  # pending | decided
    requested_at: Mapped[datetime]
    decision: Mapped[dict[str, Any] | None]
    # The run's last messages when it parked: a decision card needs no other call.
    last_messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)

    __table_args__ = (
        UniqueConstraint("run_id", "call_id"),
        Index(None, "status", "seq"),
        Index(None, "tenant", "status", "seq"),
        Index(None, "tenant", "kind", "status", "seq"),
    )


class WebhookDelivery(Base):
    """One webhook event of a run, from its rest to its delivery (or the last failed try)."""

    __tablename__ = "webhook_deliveries"

    seq: Mapped[int] = mapped_column(Serial, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)  # the receiver's Webhook-Id
    run_id: Mapped[str] = mapped_column(String(40), ForeignKey("runs.id", ondelete="CASCADE"))
    tenant: Mapped[str] = tenant_column()
    event: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[dict[str, Any]]  # the body, as the run was when it rested
    status: Mapped[str] = mapped_column(String(20))  # pending | delivered | failed
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # When the next try is due; while a sender tries, when its claim on the row lapses.
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        Index(None, "status", "next_attempt_at"),
        Index(None, "run_id", "seq"),
    )


class Readiness(Base):
    """Rewritten by every readiness check: the proof that the database takes a write."""

    __tablename__ = "readiness"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    checked_at: Mapped[datetime]
