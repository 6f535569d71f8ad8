"""Prompt expansion: the member's words verbatim at the front, detail added by a local LLM or presets."""

from __future__ import annotations

from bot.services.expansion.presets import STYLES, StylePreset, find_style
from bot.services.expansion.service import Expansion, ExpansionConfig, ExpansionService

__all__ = ["STYLES", "Expansion", "ExpansionConfig", "ExpansionService", "StylePreset", "find_style"]
