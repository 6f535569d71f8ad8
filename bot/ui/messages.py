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


def edit_mode(plan: dict[str, Any], locale: str = i18n.DEFAULT_LOCALE) -> str:
    """What an edit did, in words: a repair of a named region, or an edit of the whole picture."""
    if plan.get("mode") == "repair":
        return i18n.text(locale, "edit.mode_repair", action=plan.get("action", "edit"), target=plan.get("target", ""))
    return i18n.text(locale, "edit.mode_instruction")


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
        embed.add_field(name=t("quality.edit_field"), value=edit_mode(job.plan, locale)[:1024], inline=False)
    embed.add_field(name=t("result.seed"), value=str(job.seed))
    embed.add_field(name=t("result.model"), value=job.model)
    embed.add_field(
        name=t("result.size"), value=t("result.size_value", width=job.width, height=job.height, steps=job.steps)
    )
    scores = [image.score for image in job.images if image.score is not None]
    if scores:
        # The grid is in score order, best first: the numbers read in the same order as the images.
        value = t("quality.scores_value", scores=" · ".join(f"{s:.2f}" for s in scores), scorer=job.scorer)
        if job.best_of > 1:
            value += t("quality.scores_best_of", best_of=job.best_of)
        embed.add_field(name=t("quality.score_field"), value=value[:1024], inline=False)
    embed.set_footer(text=t("result.footer", job_id=job.id))
    return embed


def info_message(
    job: JobRecord, locale: str = i18n.DEFAULT_LOCALE, lineage: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The job's full record: in the message while it fits Discord's 2,000 characters, else as a file.
    An edit's record adds its lineage: the jobs it was made from, nearest first."""
    # Empty fields say nothing and cost characters, and the host's file paths mean nothing to a member
    # (and tell them how the host is laid out): without them a scored grid's record fits the message.
    record = {key: value for key, value in job.to_dict().items() if value is not None and key != "image"}
    record["images"] = [{k: v for k, v in image.items() if v is not None and k != "path"} for image in record["images"]]
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


def explain_embed(
    summary: dict[str, Any], words: list[dict[str, Any]] | None = None, locale: str = i18n.DEFAULT_LOCALE
) -> discord.Embed:
    """The private answer of 🔍: whose words, what was added and by what, which check fired, the run,
    the score and rank; with the engine's ``words`` once its re-run is done (cut words named)."""

    def t(key: str, **params: object) -> str:
        return i18n.text(locale, key, **params)

    expansion = summary["expansion"]
    embed = discord.Embed(title=t("quality.explain_title"), colour=discord.Colour.blurple())
    embed.add_field(name=t("quality.explain_member_words"), value=expansion["member_prompt"][:1024], inline=False)
    source_key = f"quality.source.{expansion['source']}"
    source = t(source_key) if i18n.has(source_key) else expansion["source"]
    added = expansion["added"] or t("quality.explain_nothing_added")
    embed.add_field(name=t("quality.explain_added_words", source=source), value=added[:1024], inline=False)
    if words:
        cut = [w["word"] for w in words if w["cut"]]
        if cut:
            embed.add_field(name=t("quality.explain_cut_words"), value=" ".join(cut)[:1024], inline=False)
    embed.add_field(name=t("quality.explain_guard"), value=(expansion["guard"] or t("quality.explain_no_guard"))[:1024])
    variant = expansion["variant"] or t("quality.explain_no_variant")
    run = t("quality.explain_run", seed=summary["seed"], model=summary["model"], variant=variant)
    embed.add_field(name=t("quality.explain_run_field"), value=run[:1024], inline=False)
    if summary["score"] is not None:
        score = t(
            "quality.score_value",
            score=summary["score"],
            scorer=summary["scorer"],
            rank=summary["rank"],
            of=summary["of"],
        )
    else:
        score = t("quality.not_scored")
    embed.add_field(name=t("quality.score_field"), value=score[:1024], inline=False)
    embed.set_footer(text=t("quality.explain_footer", job_id=summary["job_id"], number=summary["index"] + 1))
    return embed


# Before a variant's name in /stats: pinned by an admin, or turned off.
PINNED_MARKER = "📌 "
DISABLED_MARKER = "⛔ "


def variant_lines(report: dict[str, Any], locale: str = i18n.DEFAULT_LOCALE) -> str:
    """/stats: each expansion variant's use, mean rating and chance of being the best."""
    lines = []
    for arm in report["variants"]:
        marker = PINNED_MARKER if arm["variant"] == report["pinned"] else DISABLED_MARKER if not arm["enabled"] else ""
        mean = "–" if arm["mean_rating"] is None else f"{arm['mean_rating']:.2f}★"
        lines.append(
            i18n.text(
                locale,
                "quality.stats_variant_line",
                marker=marker,
                variant=arm["variant"],
                chosen=arm["chosen"],
                count=arm["rated"],
                mean=mean,
                probability=arm["probability_best"],
            )
        )
    return "\n".join(lines) or i18n.text(locale, "quality.stats_no_variants")
