"""What /edit, /describe, the 🪄 button and the context menus say to members, in one place (the
templates a message catalog takes over)."""

from __future__ import annotations

TEXTS: dict[str, str] = {
    "modal_title": "Edit with Atelier",
    "instruction_label": "What should change?",
    "instruction_placeholder": "make it winter · remove the car · replace the sky with fireworks",
    "image_number_label": "Which image (1–{count})",
    "edit_header": "🪄 **{instruction}**\n-# {mode}",
    "mode_instruction": "edit of the whole picture",
    "mode_repair": "{action} “{target}”",
    "describe_header": "🔎 Describing the image",
    "describe_title": "What Atelier sees",
    "describe_prompt": "**{number}.** {prompt}",
    "describe_footer": "Press 1–4 to /imagine a prompt · job {job_id}",
    "mask_caption": "What was changed",
}


def text(key: str, **values: object) -> str:
    return TEXTS[key].format(**values)
