"""/atelier …: server configuration for members with Manage Server, checked again at run time."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.ui.replies import reply_error

if TYPE_CHECKING:
    from bot.app import AtelierBot

log = logging.getLogger(__name__)


def _is_server_manager(interaction: discord.Interaction) -> bool:
    # default_permissions only hides the command; server owners can re-grant it, so check again here.
    permissions = interaction.permissions
    return bool(permissions.manage_guild or permissions.administrator)


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class AdminCog(commands.GroupCog, group_name="atelier", group_description="Configure Atelier on this server"):
    quota = app_commands.Group(name="quota", description="Daily budgets")

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        self.admin = bot.services.admin
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if not _is_server_manager(interaction):
            raise app_commands.CheckFailure("manage_guild")
        return True

    async def _run(self, interaction: discord.Interaction, action) -> None:  # type: ignore[no-untyped-def]
        message = await action()
        await interaction.response.send_message(message, ephemeral=True)

    @quota.command(name="set", description="Set the server's default, or a role's or member's daily budget")
    @app_commands.describe(
        member="Only this member", role="Only members with this role", images_per_day="-1 for unlimited"
    )
    async def quota_set(
        self,
        interaction: discord.Interaction,
        images_per_day: int | None = None,
        compute_per_day: float | None = None,
        max_concurrent: int | None = None,
        cooldown_seconds: float | None = None,
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
            return f"Quota updated: `{json.dumps(result)}`"

        await self._run(interaction, action)

    @quota.command(name="show", description="A member's budget and what they used today")
    async def quota_show(self, interaction: discord.Interaction, member: discord.Member) -> None:
        async def action() -> str:
            roles = tuple(r.id for r in member.roles)
            shown = await self.admin.show_quota(guild_id=interaction.guild_id or 0, user_id=member.id, role_ids=roles)
            return f"```json\n{json.dumps(shown, indent=1)}\n```"

        await self._run(interaction, action)

    @quota.command(name="reset", description="Give a member today's budget back")
    async def quota_reset(self, interaction: discord.Interaction, member: discord.Member) -> None:
        async def action() -> str:
            count = await self.admin.reset_quota(
                guild_id=interaction.guild_id or 0, actor_id=interaction.user.id, user_id=member.id
            )
            return f"Reset {member.mention}'s usage for today ({count} job(s) no longer count)."

        await self._run(interaction, action)

    @app_commands.command(name="config", description="Server policy for Atelier")
    @app_commands.describe(
        nsfw="Allow NSFW prompts in NSFW channels",
        style="Default style preset",
        expansion="How prompts are expanded: llm, presets or raw",
        banned_words="Comma-separated words refused in prompts (replaces the list)",
        channel="Restrict Atelier to this channel (adds it to the allowed list)",
    )
    async def config(
        self,
        interaction: discord.Interaction,
        nsfw: bool | None = None,
        style: str | None = None,
        expansion: str | None = None,
        max_side: app_commands.Range[int, 64, 2048] | None = None,
        max_steps: app_commands.Range[int, 1, 150] | None = None,
        grid_size: app_commands.Range[int, 1, 4] | None = None,
        banned_words: str | None = None,
        channel: discord.TextChannel | None = None,
    ) -> None:
        async def action() -> str:
            changes: dict[str, object] = {
                "nsfw_policy": None if nsfw is None else ("allow" if nsfw else "block"),
                "default_style": style,
                "expansion_mode": expansion,
                "max_side": max_side,
                "max_steps": max_steps,
                "grid_size": grid_size,
                "banned_words": None
                if banned_words is None
                else [w.strip() for w in banned_words.split(",") if w.strip()],
            }
            if channel is not None:
                current = await self.admin.allowed_channels(interaction.guild_id or 0)
                changes["allowed_channels"] = sorted({*current, channel.id})
            applied = await self.admin.configure(
                guild_id=interaction.guild_id or 0, actor_id=interaction.user.id, **changes
            )
            return f"Settings updated: `{json.dumps(applied, default=str)}`" if applied else "Nothing to change."

        await self._run(interaction, action)

    @app_commands.command(name="ban", description="Stop a member from using Atelier here")
    async def ban(self, interaction: discord.Interaction, member: discord.Member) -> None:
        async def action() -> str:
            await self.admin.set_banned(
                guild_id=interaction.guild_id or 0, actor_id=interaction.user.id, user_id=member.id, banned=True
            )
            return f"{member.mention} can no longer use Atelier here."

        await self._run(interaction, action)

    @app_commands.command(name="unban", description="Let a member use Atelier again")
    async def unban(self, interaction: discord.Interaction, member: discord.Member) -> None:
        async def action() -> str:
            await self.admin.set_banned(
                guild_id=interaction.guild_id or 0, actor_id=interaction.user.id, user_id=member.id, banned=False
            )
            return f"{member.mention} can use Atelier again."

        await self._run(interaction, action)


class OwnerCog(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    @app_commands.command(name="sync", description="Owner only: publish Atelier's slash commands")
    async def sync(self, interaction: discord.Interaction, here: bool = False) -> None:
        if not await self.bot.is_owner(interaction.user):
            await reply_error(interaction, "Only the bot's owner can sync commands.")
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        if here and interaction.guild is not None:
            self.bot.tree.copy_global_to(guild=interaction.guild)
            synced = await self.bot.tree.sync(guild=interaction.guild)
        else:
            synced = await self.bot.tree.sync()
        await interaction.followup.send(f"Synced {len(synced)} command(s).", ephemeral=True)


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
        left = "unlimited" if shown["images_left"] is None else str(shown["images_left"])
        resets_at = datetime.fromisoformat(shown["resets_at"].removesuffix("Z")).replace(tzinfo=UTC)
        reset = discord.utils.format_dt(resets_at, "R")
        await interaction.response.send_message(
            f"Today you made **{shown['used_images']}** image(s) "
            f"({shown['used_compute_units']:g} compute units). Left: **{left}**. Resets {reset}.",
            ephemeral=True,
        )


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(AdminCog(bot))
    await bot.add_cog(OwnerCog(bot))
    await bot.add_cog(UsageCog(bot))
