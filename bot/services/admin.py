"""Server configuration by admins. Every change is written to the audit log in the same transaction."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.db.models import AuditEntry, Guild, Member, Quota, QuotaScope, Usage
from bot.errors import InvalidRequest
from bot.services.jobs import MAX_BEST_OF
from bot.services.quota import QuotaService, day_of
from engine.contract import utcnow
from engine.queue.database import Database

log = logging.getLogger(__name__)

QUOTA_FIELDS = ("images_per_day", "compute_per_day", "max_concurrent", "cooldown_seconds")
NSFW_POLICIES = ("block", "allow")
EXPANSION_MODES = ("llm", "presets", "raw")
CONFIG_FIELDS = (
    "nsfw_policy",
    "default_style",
    "expansion_mode",
    "max_side",
    "max_steps",
    "grid_size",
    "allowed_channels",
    "allowed_models",
    "banned_words",
    "rating_emojis",
    "flagged_images",
    "best_of",
    "scoring",
)


class AdminService:
    def __init__(self, database: Database, quota: QuotaService) -> None:
        self.db = database
        self.quota = quota

    async def _guild(self, session, guild_id: int) -> Guild:  # type: ignore[no-untyped-def]
        await session.execute(sqlite_insert(Guild).values(id=guild_id).on_conflict_do_nothing())
        guild = await session.get(Guild, guild_id)
        assert guild is not None
        return guild

    async def allowed_channels(self, guild_id: int) -> list[int]:
        async with self.db.sessions() as session:
            guild = await session.get(Guild, guild_id)
        return list(guild.allowed_channels) if guild is not None and guild.allowed_channels else []

    async def show_config(self, guild_id: int) -> dict[str, Any]:
        """The server's policy and default budget as stored: None where the host's default applies."""
        async with self.db.sessions() as session:
            guild = await session.get(Guild, guild_id)
        fields = (*CONFIG_FIELDS, *QUOTA_FIELDS)
        shown: dict[str, Any] = {name: getattr(guild, name) if guild is not None else None for name in fields}
        for name in ("allowed_channels", "allowed_models", "banned_words"):
            shown[name] = list(shown[name] or [])
        shown["nsfw_policy"] = shown["nsfw_policy"] or "block"
        shown["flagged_images"] = shown["flagged_images"] or "blur"
        return shown

    async def set_channel(
        self, *, guild_id: int, actor_id: int, channel_id: int, allowed: bool
    ) -> tuple[bool, list[int]]:
        """Add a channel to (or remove it from) the channels Atelier answers in; an empty list means
        every channel. Returns whether the list changed, and the list."""
        async with self.db.transaction() as session:
            guild = await self._guild(session, guild_id)
            current = list(guild.allowed_channels or [])
            wanted = sorted({*current, channel_id}) if allowed else [c for c in current if c != channel_id]
            changed = wanted != sorted(current)
            if changed:
                guild.allowed_channels = wanted
                action = "channel.add" if allowed else "channel.remove"
                self._audit(session, guild_id, actor_id, action, {"channel_id": channel_id})
        return changed, wanted

    async def set_quota(
        self,
        *,
        guild_id: int,
        actor_id: int,
        user_id: int | None = None,
        role_id: int | None = None,
        **limits: float | int | None,
    ) -> dict[str, Any]:
        """Set the server default, or a role's or member's override. A limit of -1 means unlimited."""
        unknown = set(limits) - set(QUOTA_FIELDS)
        if unknown:
            raise InvalidRequest("admin.unknown_quota_settings", names=", ".join(sorted(unknown)))
        given = {k: v for k, v in limits.items() if v is not None}
        if not given:
            raise InvalidRequest("admin.no_limit_given")
        for name, value in given.items():
            if value < -1:
                raise InvalidRequest("admin.limit_negative", name=name)
        if user_id is not None and role_id is not None:
            raise InvalidRequest("admin.member_or_role")
        values = given  # -1 is stored as is: unlimited here, whatever the server default says
        async with self.db.transaction() as session:
            guild = await self._guild(session, guild_id)
            if user_id is None and role_id is None:
                target = {"scope": "guild", "target_id": guild_id}
                for name, value in values.items():
                    setattr(guild, name, value)
            else:
                scope = QuotaScope.USER if user_id is not None else QuotaScope.ROLE
                target_id = user_id if user_id is not None else role_id
                target = {"scope": str(scope), "target_id": target_id}
                statement = sqlite_insert(Quota).values(guild_id=guild_id, scope=scope, target_id=target_id, **values)
                await session.execute(
                    statement.on_conflict_do_update(
                        index_elements=[Quota.guild_id, Quota.scope, Quota.target_id],
                        set_={**values, "updated_at": utcnow()},
                    )
                )
            self._audit(session, guild_id, actor_id, "quota.set", {**target, **given})
        return {**target, **values}

    async def show_quota(self, *, guild_id: int, user_id: int, role_ids: tuple[int, ...] = ()) -> dict[str, Any]:
        async with self.db.sessions() as session:
            guild = await session.get(Guild, guild_id)
            summary = await self.quota.summary(session, guild, guild_id, user_id, role_ids)
        return {
            "guild_id": guild_id,
            "user_id": user_id,
            "used_images": summary.images,
            "used_compute_units": summary.compute_units,
            "active_jobs": summary.running,
            "images_left": summary.images_left,
            "compute_left": summary.compute_left,
            "limits": asdict(summary.budget),
            "resets_at": summary.resets_at.isoformat() + "Z",
        }

    async def reset_quota(self, *, guild_id: int, actor_id: int, user_id: int) -> int:
        """Give a member today's budget back (their jobs stay recorded)."""
        async with self.db.transaction() as session:
            result = await session.execute(
                update(Usage)
                .where(
                    Usage.guild_id == guild_id,
                    Usage.user_id == user_id,
                    Usage.day == day_of(utcnow()),
                    Usage.refunded_at.is_(None),
                )
                .values(refunded_at=utcnow())
                .returning(Usage.job_id)
            )
            count = len(result.all())
            self._audit(session, guild_id, actor_id, "quota.reset", {"user_id": user_id, "jobs": count})
        return count

    async def configure(self, *, guild_id: int, actor_id: int, **changes: Any) -> dict[str, Any]:
        """Policy settings: nsfw_policy, default_style, expansion_mode, max_side, max_steps, grid_size,
        allowed channels, models and banned words (lists are replaced whole)."""
        allowed = set(CONFIG_FIELDS)
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - allowed
        if unknown:
            raise InvalidRequest("admin.unknown_settings", names=", ".join(sorted(unknown)))
        if "nsfw_policy" in changes and changes["nsfw_policy"] not in NSFW_POLICIES:
            raise InvalidRequest("admin.one_of", name="nsfw_policy", values=", ".join(NSFW_POLICIES))
        if "flagged_images" in changes and changes["flagged_images"] not in ("blur", "withhold"):
            raise InvalidRequest("admin.one_of", name="flagged_images", values="blur, withhold")
        if "expansion_mode" in changes and changes["expansion_mode"] not in EXPANSION_MODES:
            raise InvalidRequest("admin.one_of", name="expansion_mode", values=", ".join(EXPANSION_MODES))
        for name in ("max_side", "max_steps", "grid_size"):
            if name in changes and int(changes[name]) < 1:
                raise InvalidRequest("admin.at_least_one", name=name)
        if "grid_size" in changes and int(changes["grid_size"]) > 4:
            raise InvalidRequest("admin.grid_at_most", high=4)
        if "best_of" in changes and not 1 <= int(changes["best_of"]) <= MAX_BEST_OF:
            raise InvalidRequest("admin.best_of_range", high=MAX_BEST_OF)
        async with self.db.transaction() as session:
            guild = await self._guild(session, guild_id)
            for name, value in changes.items():
                setattr(guild, name, value)
            self._audit(session, guild_id, actor_id, "config", changes)
        return changes

    async def set_banned(self, *, guild_id: int, actor_id: int, user_id: int, banned: bool) -> None:
        async with self.db.transaction() as session:
            await self._guild(session, guild_id)
            statement = sqlite_insert(Member).values(guild_id=guild_id, user_id=user_id, banned=banned)
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=[Member.guild_id, Member.user_id], set_={"banned": banned}
                )
            )
            self._audit(session, guild_id, actor_id, "ban" if banned else "unban", {"user_id": user_id})

    async def audit_log(self, guild_id: int, limit: int = 50) -> list[AuditEntry]:
        async with self.db.sessions() as session:
            query = (
                select(AuditEntry).where(AuditEntry.guild_id == guild_id).order_by(AuditEntry.id.desc()).limit(limit)
            )
            return list((await session.execute(query)).scalars().all())

    @staticmethod
    def _audit(session, guild_id: int, actor_id: int, action: str, detail: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
        session.add(AuditEntry(guild_id=guild_id, actor_id=actor_id, action=action, detail=detail))
        log.info("admin %s in guild %s: %s %s", actor_id, guild_id, action, detail)
