"""The schema. Every table here is created by an Alembic migration; a test keeps the two in step."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from bot.db.base import Base
from engine.contract import JobKind, JobStatus, utcnow

# The rows of the two partial indexes on jobs (see Job). Only NULL tests: SQLite uses a partial index
# for a query whose WHERE holds each of these terms as written, which a bound value would not be.
UNDELIVERED_SQL = "finished_at IS NOT NULL AND delivered_at IS NULL AND channel_id IS NOT NULL"
COSTED_SQL = "gpu_seconds IS NOT NULL"


class Guild(Base):
    """A Discord server and its policy. Columns rather than a blob so admins' changes are queryable."""

    __tablename__ = "guilds"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    images_per_day: Mapped[int | None] = mapped_column(Integer)
    compute_per_day: Mapped[float | None] = mapped_column(Float)
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    cooldown_seconds: Mapped[float | None] = mapped_column(Float)
    max_side: Mapped[int | None] = mapped_column(Integer)
    max_steps: Mapped[int | None] = mapped_column(Integer)
    grid_size: Mapped[int | None] = mapped_column(Integer)
    default_style: Mapped[str | None] = mapped_column(String(40))
    expansion_mode: Mapped[str | None] = mapped_column(String(20))
    nsfw_policy: Mapped[str] = mapped_column(String(20), default="block")
    # What happens to a result the image classifier flags outside an allowed NSFW channel.
    flagged_images: Mapped[str] = mapped_column(String(20), default="blur")
    allowed_channels: Mapped[list[int]] = mapped_column(JSON, default=list)
    allowed_models: Mapped[list[str]] = mapped_column(JSON, default=list)
    banned_words: Mapped[list[str]] = mapped_column(JSON, default=list)
    rating_emojis: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    # Quality loop: candidates drawn per requested image (all charged), whether images are scored at
    # all, and the expansion variants admins pinned or took out of the bandit's choice.
    best_of: Mapped[int | None] = mapped_column(Integer)
    scoring: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    learn_variants: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    variant_pinned: Mapped[str | None] = mapped_column(String(20))
    variants_disabled: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")


class Member(Base):
    __tablename__ = "members"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    display_name: Mapped[str] = mapped_column(String(100), default="")
    banned: Mapped[bool] = mapped_column(Boolean, default=False)
    # Per-member defaults (style, aspect ratio, raw, count) set through /settings.
    preferences: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Job(Base):
    """One request. Also the queue entry of the SQLite backend: the lease columns live here."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_available", "status", "available_at"),
        Index("ix_jobs_user_status", "user_id", "status"),
        Index("ix_jobs_guild_created", "guild_id", "created_at"),
        # The SQLite queue's lanes: one slice per (model, member), oldest first, so a fair claim finds
        # each lane's head with one seek however deep the queue, and reads nothing else (it holds
        # every column the pick needs; engine/queue/sqlite.py).
        Index("ix_jobs_lane", "status", "model", "user_id", "created_at", "id", "available_at"),
        # Partial indexes hold only the rows their reader wants, so its cost follows them rather than
        # the server's history: the results not yet posted, read by the delivery pass after every
        # nudge (bot/services/delivery.py), and the finished jobs whose recent cost the wait
        # estimate averages (JobService.progress).
        Index("ix_jobs_undelivered", "finished_at", sqlite_where=text(UNDELIVERED_SQL)),
        Index("ix_jobs_costed", "finished_at", "gpu_seconds", sqlite_where=text(COSTED_SQL)),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, default=0)
    user_id: Mapped[int] = mapped_column(BigInteger, default=0)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    parent_job_id: Mapped[str | None] = mapped_column(String(32))

    kind: Mapped[str] = mapped_column(String(16), default=JobKind.TEXT_TO_IMAGE)
    # The member's own words, and what the text encoder reads (those words plus the expansion).
    member_prompt: Mapped[str] = mapped_column(Text)
    model_prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    expansion_source: Mapped[str] = mapped_column(String(16), default="raw")
    style: Mapped[str | None] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    scheduler: Mapped[str | None] = mapped_column(String(60))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    guidance: Mapped[float] = mapped_column(Float, default=0.0)
    seed: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer, default=1)
    strength: Mapped[float | None] = mapped_column(Float)
    init_image: Mapped[str | None] = mapped_column(Text)
    best_of: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    scoring: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    # The expansion variant the server's bandit chose (None: the member or server chose the expansion),
    # and which guard, if any, sent the expansion to the presets.
    variant: Mapped[str | None] = mapped_column(String(20))
    expansion_guard: Mapped[str | None] = mapped_column(Text)
    # Set by the engine: the preference model that scored the images, and each candidate's seed and score.
    scorer: Mapped[str | None] = mapped_column(String(200))
    candidates: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # An explain job's findings: the words with their tokens and tiles, whether the re-run reproduced.
    explanation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Edits and repairs: the mode, the structured plan (action, target, replacement) and its settings.
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    available_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(80))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Denoising step reached by the engine, written at most about once a second.
    progress_step: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)

    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    gpu_seconds: Mapped[float | None] = mapped_column(Float)
    compute_units: Mapped[float] = mapped_column(Float, default=0.0)
    # What a job made besides its images: a description's caption and prompts, a repair's mask path.
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    # Failed posts of the result: the next try waits longer each time, and past the cap it is undeliverable.
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_delivery_at: Mapped[datetime | None] = mapped_column(DateTime)
    delivery_error: Mapped[str | None] = mapped_column(Text)

    images: Mapped[list[Image]] = relationship(
        back_populates="job", order_by="Image.index", lazy="selectin", cascade="all, delete-orphan"
    )


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("job_id", "index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer, default=0)
    path: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    # Probability of NSFW content from the optional image classifier; None when none is configured.
    nsfw_score: Mapped[float | None] = mapped_column(Float)
    # The image's own seed (None in rows from before it was stored: the job's seed plus the index),
    # its preference score and its CLIP similarity to the member's words.
    seed: Mapped[int | None] = mapped_column(BigInteger)
    score: Mapped[float | None] = mapped_column(Float)
    alignment: Mapped[float | None] = mapped_column(Float)
    message_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="images")


class Usage(Base):
    """One row per job: what was reserved against the member's budget and what it really cost."""

    __tablename__ = "usage"
    __table_args__ = (Index("ix_usage_member_day", "guild_id", "user_id", "day"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    day: Mapped[date] = mapped_column(Date)
    images: Mapped[int] = mapped_column(Integer)
    compute_units: Mapped[float] = mapped_column(Float)
    gpu_seconds: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    refunded_at: Mapped[datetime | None] = mapped_column(DateTime)


class Rating(Base):
    __tablename__ = "ratings"
    __table_args__ = (UniqueConstraint("image_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    emoji: Mapped[str] = mapped_column(String(64))
    score: Mapped[int] = mapped_column(Integer)
    by_requester: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class QuotaScope(StrEnum):
    ROLE = "role"
    USER = "user"


class Quota(Base):
    """Overrides of the guild's default budget for a role or a member."""

    __tablename__ = "quotas"
    __table_args__ = (UniqueConstraint("guild_id", "scope", "target_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    scope: Mapped[str] = mapped_column(String(8))
    target_id: Mapped[int] = mapped_column(BigInteger)
    images_per_day: Mapped[int | None] = mapped_column(Integer)
    compute_per_day: Mapped[float | None] = mapped_column(Float)
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    cooldown_seconds: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Worker(Base):
    """Engine processes announce themselves here so operators see who is alive."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, index=True)
    actor_id: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(60))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ModerationEvent(Base):
    """A refused prompt: kept with the member's id so admins can review it; it never reaches the queue."""

    __tablename__ = "moderation_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, index=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    prompt: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    # Which rule refused it ("builtin", "banned_word:…", "nsfw", "channel"): admins are told, members are not.
    rule: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
