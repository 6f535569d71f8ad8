"""What a job looks like in Discord: the result embed and the /info answer, within Discord's limits,
in the member's language."""

from __future__ import annotations

import io
import json
from typing import Any

import discord

from bot import i18n
from bot.services.records import JobRecord

MESSAGE_LIMIT = 2000


def expansion_label(source: str, locale: str) -> str:
    """How the model's prompt was written, in words (never "fallback")."""
    key = f"result.source.{source}"
    return i18n.text(locale, key) if i18n.has(key) else source


def result_embed(job: JobRecord, locale: str = i18n.DEFAULT_LOCALE) -> discord.Embed:
    def t(key: str, **params: object) -> str:
        return i18n.text(locale, key, **params)

    embed = discord.Embed(title=job.member_prompt[:256], colour=discord.Colour.blurple())
    if job.model_prompt != job.member_prompt:
        name = t("result.expanded", how=expansion_label(job.expansion_source, locale))
        embed.add_field(name=name[:256], value=job.model_prompt[:1024], inline=False)
    if job.negative_prompt:
        embed.add_field(name=t("result.negative"), value=job.negative_prompt[:1024], inline=False)
    if job.plan:
        plan = job.plan
        done = f"{plan.get('action')} “{plan.get('target')}”" if plan.get("mode") == "repair" else "whole picture"
        embed.add_field(name="Edit", value=done[:1024], inline=False)
    embed.add_field(name=t("result.seed"), value=str(job.seed))
    embed.add_field(name=t("result.model"), value=job.model)
    embed.add_field(
        name=t("result.size"), value=t("result.size_value", width=job.width, height=job.height, steps=job.steps)
    )
    embed.set_footer(text=t("result.footer", job_id=job.id))
    return embed


def info_message(
    job: JobRecord, locale: str = i18n.DEFAULT_LOCALE, lineage: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The job's full record: in the message while it fits Discord's 2,000 characters, else as a file.
    An edit's record adds its lineage: the jobs it was made from, nearest first."""
    record = job.to_dict()
    if lineage:
        record["lineage"] = lineage
    text = json.dumps(record, indent=1, ensure_ascii=False, default=str)
    block = f"```json\n{text}\n```"
    if len(block) <= MESSAGE_LIMIT:
        return {"content": block}
    return {
        "content": i18n.text(locale, "result.record_attached", job_id=job.id),
        "file": discord.File(io.BytesIO(text.encode()), filename=f"job-{job.id}.json"),
    }
