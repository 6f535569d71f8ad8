"""/atelier …: server configuration for members with Manage Server, checked again at run time; /sync for
the bot's owner; /usage for everyone."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import InvalidRequest, PolicyRefused
from bot.services.expansion import STYLES
from bot.ui.options import style_suggestions
from bot.ui.translator import relative_time, say

if TYPE_CHECKING:
    from bot.app import AtelierBot

log = logging.getLogger(__name__)


def _is_server_manager(interaction: discord.Interaction) -> bool:
    # default_permissions only hides the command; server owners can re-grant it, so check again here.
    permissions = interaction.permissions
    return bool(permissions.manage_guild or permissions.administrator)


def _channels(interaction: discord.Interaction, channel_ids: list[int]) -> str:
    return ", ".join(f"<#{c}>" for c in channel_ids) or say(interaction, "admin.all_channels")


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class AdminCog(commands.GroupCog, group_name="atelier", group_description="Configure Atelier on this server"):
    quota = app_commands.Group(name="quota", description="Daily budgets")
    config = app_commands.Group(name="config", description="Server policy for Atelier")

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        self.admin = bot.services.admin
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if not _is_server_manager(interaction):
            raise app_commands.CheckFailure("manage_guild")
        return True

    async def _run(self, interaction: discord.Interaction, action: Callable[[], Awaitable[str]]) -> None:
        message = await action()
        await interaction.response.send_message(message, ephemeral=True)

    @quota.command(name="set", description="Set the server's default, or a role's or member's daily budget")
    @app_commands.describe(
        images_per_day="Images a member may make per day; -1 for unlimited",
        compute_per_day="Compute units (megapixels × steps × images) per day; -1 for unlimited",
        max_concurrent="Jobs a member may have waiting or running at once; -1 for unlimited",
        cooldown_seconds="Seconds between two requests of a member",
        member="Only this member",
        role="Only members with this role",
    )
    async def quota_set(
        self,
        interaction: discord.Interaction,
        images_per_day: app_commands.Range[int, -1] | None = None,
        compute_per_day: app_commands.Range[float, -1] | None = None,
        max_concurrent: app_commands.Range[int, -1] | None = None,
        cooldown_seconds: app_commands.Range[float, 0] | None = None,
        member: discord.Member | None = None,
        role: discord.Role | None = None,
    ) -> None:
        async def action() -> str:
            result = await self.admin.set_quota(
                guild_id=interaction.guild_id or 0,
                actor_id=interaction.user.id,
                user_id=member.id if member else None,
                role_id=role.id if role else None,
                images_per_day=images_per_day,
                compute_per_day=compute_per_day,
                max_concurrent=max_concurrent,
                cooldown_seconds=cooldown_seconds,
            )
            return say(interaction, "admin.quota_updated", detail=json.dumps(result))

        await self._run(interaction, action)

    @quota.command(name="show", description="A member's budget and what they used today")
    @app_commands.describe(member="Whose budget to show")
    async def quota_show(self, interaction: discord.Interaction, member: discord.Member) -> None:
        async def action() -> str:
            roles = tuple(r.id for r in member.roles)
            shown = await self.admin.show_quota(guild_id=interaction.guild_id or 0, user_id=member.id, role_ids=roles)
            return f"```json\n{json.dumps(shown, indent=1)}\n```"

        await self._run(interaction, action)

    @quota.command(name="reset", description="Give a member today's budget back")
    @app_commands.describe(member="Whose usage to reset")
    async def quota_reset(self, interaction: discord.Interaction, member: discord.Member) -> None:
        async def action() -> str:
            count = await self.admin.reset_quota(
                guild_id=interaction.guild_id or 0, actor_id=interaction.user.id, user_id=member.id
            )
            return say(interaction, "admin.quota_reset", member=member.mention, count=count)

        await self._run(interaction, action)

    @config.command(name="set", description="Change the server's policy for Atelier")
    @app_commands.describe(
        nsfw="Allow NSFW prompts in NSFW channels",
        style="Default style preset",
        expansion="How prompts are expanded: by the language model, the style presets, or not at all",
        max_side="Largest width or height in pixels",
        max_steps="Most denoising steps a request may ask for",
        grid_size="Images per request unless a member says otherwise (1–4)",
        banned_words="Comma-separated words refused in prompts (replaces the list)",
        best_of="Draw 1-8 candidates per image, keep the best-scored. All candidates are charged to the member.",
        scoring="Score every image and order grids by it (off: nothing is scored and best_of stays 1)",
    )
    @app_commands.autocomplete(style=style_suggestions)
    async def config_set(
        self,
        interaction: discord.Interaction,
        nsfw: bool | None = None,
        style: app_commands.Range[str, 1, 40] | None = None,
        expansion: Literal["llm", "presets", "raw"] | None = None,
        max_side: app_commands.Range[int, 64, 2048] | None = None,
        max_steps: app_commands.Range[int, 1, 150] | None = None,
        grid_size: app_commands.Range[int, 1, 4] | None = None,
        banned_words: app_commands.Range[str, 1, 1000] | None = None,
        best_of: app_commands.Range[int, 1, 8] | None = None,
        scoring: bool | None = None,
    ) -> None:
        async def action() -> str:
            if style is not None and style.strip().lower() not in STYLES:
                raise InvalidRequest("errors.unknown_style", style=style[:50], styles=", ".join(sorted(STYLES)))
            changes: dict[str, object] = {
                "nsfw_policy": None if nsfw is None else ("allow" if nsfw else "block"),
                "default_style": style.strip().lower() if style else None,
                "expansion_mode": expansion,
                "max_side": max_side,
                "max_steps": max_steps,
                "grid_size": grid_size,
                "best_of": best_of,
                "scoring": scoring,
                "banned_words": None
                if banned_words is None
                else [w.strip() for w in banned_words.split(",") if w.strip()],
            }
            applied = await self.admin.configure(
                guild_id=interaction.guild_id or 0, actor_id=interaction.user.id, **changes
            )
            if not applied:
                return say(interaction, "admin.nothing_to_change")
            return say(interaction, "admin.settings_updated", detail=json.dumps(applied, default=str))

        await self._run(interaction, action)

    @config.command(name="show", description="Every Atelier setting of this server")
    async def config_show(self, interaction: discord.Interaction) -> None:
        shown = await self.admin.show_config(interaction.guild_id or 0)
        embed = discord.Embed(title=say(interaction, "admin.config_title"), colour=discord.Colour.blurple())
        for name, value in shown.items():
            if name == "allowed_channels":
                text = _channels(interaction, value)
            elif value is None or value == [] or value == {}:
                text = say(interaction, "admin.not_set")
            elif isinstance(value, list | dict):
                text = json.dumps(value, ensure_ascii=False)
            else:
                text = str(value)
            embed.add_field(name=name, value=text[:1024])
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @config.command(name="channel", description="Add or remove a channel Atelier answers in (none listed: all)")
    @app_commands.describe(action="add or remove", channel="The channel")
    async def config_channel(
        self, interaction: discord.Interaction, action: Literal["add", "remove"], channel: discord.TextChannel
    ) -> None:
        async def run() -> str:
            changed, channels = await self.admin.set_channel(
                guild_id=interaction.guild_id or 0,
                actor_id=interaction.user.id,
                channel_id=channel.id,
                allowed=action == "add",
            )
            if action == "remove" and not changed:
                key = "admin.channel_not_listed"
            else:
                key = "admin.channel_added" if action == "add" else "admin.channel_removed"
            return say(interaction, key, channel=channel.mention, channels=_channels(interaction, channels))

        await self._run(interaction, run)

    @app_commands.command(name="variants", description="How the server learns which prompt expansion members like")
    @app_commands.describe(
        learn="Learn from ratings which expansion variant members like (when they chose none)",
        pin="Always use this variant: concise, rich, presets or raw; auto lets ratings decide",
        disable="Comma-separated variants never tried (replaces the list; none clears it)",
    )
    @app_commands.choices(
        pin=[app_commands.Choice(name=name, value=name) for name in ("auto", "concise", "rich", "presets", "raw")]
    )
    async def variants(
        self,
        interaction: discord.Interaction,
        learn: bool | None = None,
        pin: str | None = None,
        disable: str | None = None,
    ) -> None:
        async def action() -> str:
            disabled = None
            if disable is not None:
                disabled = (
                    [] if disable.strip().lower() == "none" else [v.strip() for v in disable.split(",") if v.strip()]
                )
            changes = await self.bot.services.bandit.configure(
                guild_id=interaction.guild_id or 0,
                actor_id=interaction.user.id,
                learn=learn,
                pin=pin,
                disabled=disabled,
            )
            return (
                say(interaction, "quality.variants_updated", changes=json.dumps(changes))
                if changes
                else say(interaction, "admin.nothing_to_change")
            )

        await self._run(interaction, action)

    @app_commands.command(name="ban", description="Stop a member from using Atelier here")
    @app_commands.describe(member="Who to stop")
    async def ban(self, interaction: discord.Interaction, member: discord.Member) -> None:
        async def action() -> str:
            await self.admin.set_banned(
                guild_id=interaction.guild_id or 0, actor_id=interaction.user.id, user_id=member.id, banned=True
            )
            return say(interaction, "admin.banned", member=member.mention)

        await self._run(interaction, action)

    @app_commands.command(name="unban", description="Let a member use Atelier again")
    @app_commands.describe(member="Who to let back")
    async def unban(self, interaction: discord.Interaction, member: discord.Member) -> None:
        async def action() -> str:
            await self.admin.set_banned(
                guild_id=interaction.guild_id or 0, actor_id=interaction.user.id, user_id=member.id, banned=False
            )
            return say(interaction, "admin.unbanned", member=member.mention)

        await self._run(interaction, action)


class OwnerCog(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    @app_commands.command(name="sync", description="Owner only: publish Atelier's slash commands")
    @app_commands.describe(here="Only to this server (takes effect at once)")
    # Hidden from everyone but administrators; the owner check below is what decides.
    @app_commands.default_permissions(administrator=True)
    async def sync(self, interaction: discord.Interaction, here: bool = False) -> None:
        # ATELIER_OWNER_IDS when set, else the application's owner (or team) as Discord reports it.
        if not await self.bot.is_owner(interaction.user):
            raise PolicyRefused("errors.owner_only")
        await interaction.response.defer(ephemeral=True, thinking=True)
        if here and interaction.guild is not None:
            self.bot.tree.copy_global_to(guild=interaction.guild)
            synced = await self.bot.tree.sync(guild=interaction.guild)
        else:
            synced = await self.bot.tree.sync()
        await interaction.followup.send(say(interaction, "admin.synced", count=len(synced)), ephemeral=True)


class UsageCog(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    @app_commands.command(name="usage", description="What you used today and what is left")
    @app_commands.guild_only()
    async def usage(self, interaction: discord.Interaction) -> None:
        roles = tuple(r.id for r in getattr(interaction.user, "roles", ()))
        shown = await self.bot.services.admin.show_quota(
            guild_id=interaction.guild_id or 0, user_id=interaction.user.id, role_ids=roles
        )
        left = say(interaction, "quota.unlimited") if shown["images_left"] is None else str(shown["images_left"])
        resets_at = datetime.fromisoformat(shown["resets_at"].removesuffix("Z")).replace(tzinfo=UTC)
        await interaction.response.send_message(
            say(
                interaction,
                "quota.usage",
                images=shown["used_images"],
                units=shown["used_compute_units"],
                left=left,
                when=relative_time(resets_at),
            ),
            ephemeral=True,
        )


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(AdminCog(bot))
    await bot.add_cog(OwnerCog(bot))
    await bot.add_cog(UsageCog(bot))
