"""What a job looks like in Discord: the result embed and the /info answer, within Discord's limits."""

from __future__ import annotations

import io
import json
from typing import Any

import discord

from bot.services.records import JobRecord

MESSAGE_LIMIT = 2000


def result_embed(job: JobRecord) -> discord.Embed:
    embed = discord.Embed(title=job.member_prompt[:256], colour=discord.Colour.blurple())
    if job.model_prompt != job.member_prompt:
        embed.add_field(name=f"Expanded prompt ({job.expansion_source})", value=job.model_prompt[:1024], inline=False)
    if job.negative_prompt:
        embed.add_field(name="Negative", value=job.negative_prompt[:1024], inline=False)
    embed.add_field(name="Seed", value=str(job.seed))
    embed.add_field(name="Model", value=job.model)
    embed.add_field(name="Size", value=f"{job.width}×{job.height}, {job.steps} steps")
    embed.set_footer(text=f"job {job.id}")
    return embed


def info_message(job: JobRecord) -> dict[str, Any]:
    """The job's full record: in the message while it fits Discord's 2,000 characters, else as a file."""
    text = json.dumps(job.to_dict(), indent=1, ensure_ascii=False, default=str)
    block = f"```json\n{text}\n```"
    if len(block) <= MESSAGE_LIMIT:
        return {"content": block}
    return {
        "content": f"Job {job.id}: the full record is attached.",
        "file": discord.File(io.BytesIO(text.encode()), filename=f"job-{job.id}.json"),
    }
