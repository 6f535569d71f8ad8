"""What Discord refuses, as Discord refuses it: the limits on messages, embeds, components, uploads and
command syncs, with the HTTP status and JSON error code of the API (discord-api-docs: Message Resource,
Embed Limits, Message Components, Application Commands, JSON Error Codes).

Each check raises ``Refusal``; the simulator turns it into the same response Discord sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import regex

# JSON error codes (discord-api-docs, topics/opcodes-and-status-codes)
UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
UNKNOWN_INTERACTION = 10062
REQUEST_TOO_LARGE = 40005
ALREADY_ACKNOWLEDGED = 40060
MISSING_ACCESS = 50001
MISSING_PERMISSIONS = 50013
INVALID_WEBHOOK_TOKEN = 50027
INVALID_FORM_BODY = 50035

MAX_CONTENT = 2000
MAX_EMBEDS = 10
EMBED_LIMITS = {"title": 256, "description": 4096}
MAX_EMBED_FIELDS = 25
MAX_FIELD_NAME = 256
MAX_FIELD_VALUE = 1024
MAX_FOOTER = 2048
MAX_AUTHOR = 256
MAX_EMBED_TOTAL = 6000
MAX_ROWS = 5
MAX_BUTTONS_PER_ROW = 5
MAX_CUSTOM_ID = 100
MAX_LABEL = 80
MAX_COMMANDS = 100
MAX_OPTIONS = 25
MAX_CHOICES = 25
# Application Commands, "Application Command Naming": Unicode letters and numbers in any script, plus
# Devanagari and Thai (whose vowel signs are marks, not letters), and - _ '; lowercase where a letter has
# a lowercase form. The `regex` module knows Unicode properties and scripts; `re` does not.
COMMAND_NAME = regex.compile(r"^[-_'\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]{1,32}$")
# Reference, "Locales": the only keys a *_localizations object may have.
LOCALES = frozenset(
    "id da de en-GB en-US es-ES es-419 fr hr it lt hu nl no pl pt-BR ro fi sv-SE vi tr cs el bg ru uk hi th "
    "zh-CN ja zh-TW ko".split()
)
MAX_AUTOCOMPLETE_CHOICES = 25

PERMISSIONS = {
    "add_reactions": 1 << 6,
    "view_channel": 1 << 10,
    "send_messages": 1 << 11,
    "manage_messages": 1 << 13,
    "embed_links": 1 << 14,
    "attach_files": 1 << 15,
    "read_message_history": 1 << 16,
}


@dataclass
class Refusal(Exception):
    status: int
    code: int
    message: str
    errors: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return body


def _form_error(path: str, code: str, message: str) -> Refusal:
    """Discord's 400 "Invalid Form Body", with the offending field's path as in its ``errors`` tree."""
    tree: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        tree = {part: tree}
    return Refusal(400, INVALID_FORM_BODY, "Invalid Form Body", tree)


def _too_long(path: str, limit: int) -> Refusal:
    return _form_error(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def check_message(payload: dict[str, Any], *, creating: bool, has_files: bool = False) -> None:
    """Content, embeds and components of a message being created or edited."""
    content = payload.get("content")
    if content is not None and len(content) > MAX_CONTENT:
        raise _too_long("content", MAX_CONTENT)
    embeds = payload.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        raise _too_long("embeds", MAX_EMBEDS)
    total = 0
    for i, embed in enumerate(embeds):
        for key, limit in EMBED_LIMITS.items():
            text = embed.get(key) or ""
            if len(text) > limit:
                raise _too_long(f"embeds.{i}.{key}", limit)
            total += len(text)
        fields = embed.get("fields") or []
        if len(fields) > MAX_EMBED_FIELDS:
            raise _too_long(f"embeds.{i}.fields", MAX_EMBED_FIELDS)
        for j, item in enumerate(fields):
            name, value = item.get("name") or "", item.get("value") or ""
            if not name or not value:
                raise _form_error(f"embeds.{i}.fields.{j}", "BASE_TYPE_REQUIRED", "This field is required")
            if len(name) > MAX_FIELD_NAME:
                raise _too_long(f"embeds.{i}.fields.{j}.name", MAX_FIELD_NAME)
            if len(value) > MAX_FIELD_VALUE:
                raise _too_long(f"embeds.{i}.fields.{j}.value", MAX_FIELD_VALUE)
            total += len(name) + len(value)
        footer = (embed.get("footer") or {}).get("text") or ""
        author = (embed.get("author") or {}).get("name") or ""
        if len(footer) > MAX_FOOTER:
            raise _too_long(f"embeds.{i}.footer.text", MAX_FOOTER)
        if len(author) > MAX_AUTHOR:
            raise _too_long(f"embeds.{i}.author.name", MAX_AUTHOR)
        total += len(footer) + len(author)
    if total > MAX_EMBED_TOTAL:
        raise _form_error("embeds", "MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}")
    check_components(payload.get("components") or [])
    if creating and not (content or embeds or payload.get("components") or has_files):
        raise Refusal(400, 50006, "Cannot send an empty message")


def check_components(rows: list[dict[str, Any]]) -> None:
    if len(rows) > MAX_ROWS:
        raise _too_long("components", MAX_ROWS)
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if row.get("type") != 1:
            raise _form_error(
                f"components.{i}.type", "UNION_TYPE_CHOICES", 'Value of field "type" must be one of (1,).'
            )
        children = row.get("components") or []
        if not children:
            raise _form_error(f"components.{i}.components", "BASE_TYPE_REQUIRED", "This field is required")
        if len(children) > MAX_BUTTONS_PER_ROW:
            raise _too_long(f"components.{i}.components", MAX_BUTTONS_PER_ROW)
        for j, child in enumerate(children):
            where = f"components.{i}.components.{j}"
            custom_id = child.get("custom_id")
            if child.get("type") == 2 and child.get("style") != 5 and not custom_id:
                raise _form_error(f"{where}.custom_id", "BASE_TYPE_REQUIRED", "This field is required")
            if custom_id is not None:
                if len(custom_id) > MAX_CUSTOM_ID:
                    raise _too_long(f"{where}.custom_id", MAX_CUSTOM_ID)
                if custom_id in seen:
                    raise _form_error(
                        f"{where}.custom_id",
                        "COMPONENT_CUSTOM_ID_DUPLICATED",
                        "Component custom id cannot be duplicated",
                    )
                seen.add(custom_id)
            if len(child.get("label") or "") > MAX_LABEL:
                raise _too_long(f"{where}.label", MAX_LABEL)
            if child.get("type") == 2 and not (child.get("label") or child.get("emoji")):
                raise _form_error(where, "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED", "A label or an emoji is required")


def check_upload(sizes: list[int], limit: int) -> None:
    if any(size > limit for size in sizes):
        raise Refusal(413, REQUEST_TOO_LARGE, "Request entity too large")


def check_permissions(granted: int, *needed: str) -> None:
    if not granted & PERMISSIONS["view_channel"]:
        raise Refusal(403, MISSING_ACCESS, "Missing Access")
    for name in needed:
        if not granted & PERMISSIONS[name]:
            raise Refusal(403, MISSING_PERMISSIONS, "Missing Permissions")


def needed_to_post(payload: dict[str, Any], has_files: bool) -> list[str]:
    needed = ["send_messages"]
    if payload.get("embeds"):
        needed.append("embed_links")
    if has_files:
        needed.append("attach_files")
    return needed


def check_commands(commands: list[dict[str, Any]]) -> None:
    """A bulk overwrite of application commands, validated as Discord does before storing any."""
    if len(commands) > MAX_COMMANDS:
        raise _too_long("", MAX_COMMANDS)
    names: set[tuple[int, str]] = set()
    for i, command in enumerate(commands):
        kind = command.get("type", 1)
        key = (kind, command.get("name", ""))
        if key in names:
            raise Refusal(
                400,
                INVALID_FORM_BODY,
                "Invalid Form Body",
                {
                    "_errors": [
                        {
                            "code": "APPLICATION_COMMANDS_DUPLICATE_NAME",
                            "message": f"Application command names must be unique: {key[1]}",
                        }
                    ]
                },
            )
        names.add(key)
        _check_named(f"{i}", command, slash=kind == 1)
        if kind == 1:
            _check_options(f"{i}.options", command.get("options") or [])


def _check_locales(path: str, localizations: dict[str, Any]) -> None:
    for locale in localizations:
        if locale not in LOCALES:
            raise _form_error(f"{path}.{locale}", "LOCALE_INVALID", f"Invalid locale: {locale}")


def _valid_name(name: str) -> bool:
    return bool(COMMAND_NAME.match(name)) and name == name.lower()


def _check_named(path: str, node: dict[str, Any], *, slash: bool) -> None:
    name = node.get("name") or ""
    if slash and not _valid_name(name):
        raise _form_error(f"{path}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
    _check_locales(f"{path}.name_localizations", node.get("name_localizations") or {})
    _check_locales(f"{path}.description_localizations", node.get("description_localizations") or {})
    for locale, localized in (node.get("name_localizations") or {}).items():
        if slash and not _valid_name(localized):
            raise _form_error(
                f"{path}.name_localizations.{locale}", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
            )
    if slash:
        description = node.get("description") or ""
        if not 1 <= len(description) <= 100:
            raise _form_error(f"{path}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        for locale, localized in (node.get("description_localizations") or {}).items():
            if not 1 <= len(localized) <= 100:
                raise _form_error(
                    f"{path}.description_localizations.{locale}",
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                )


def _check_options(path: str, options: list[dict[str, Any]], *, depth: int = 0) -> None:
    """``depth``: 0 under a command, 1 under a subcommand group. Discord nests at most command → group →
    subcommand, and a name (or its translation in one locale) is unique among its siblings."""
    if len(options) > MAX_OPTIONS:
        raise _too_long(path, MAX_OPTIONS)
    optional_seen = False
    seen: set[str] = set()
    seen_localized: set[tuple[str, str]] = set()
    for i, option in enumerate(options):
        where = f"{path}.{i}"
        _check_named(where, option, slash=True)
        localized = {(locale, name) for locale, name in (option.get("name_localizations") or {}).items()}
        if option["name"] in seen or localized & seen_localized:
            raise _form_error(
                f"{where}.name", "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS", "Option names must be unique"
            )
        seen.add(option["name"])
        seen_localized |= localized
        if option.get("type") == 2 and depth > 0:
            raise _form_error(
                f"{where}.type", "APPLICATION_COMMAND_OPTION_TYPE_INVALID", "Subcommand groups cannot be nested"
            )
        if depth == 1 and option.get("type") != 1:
            raise _form_error(
                f"{where}.type", "APPLICATION_COMMAND_OPTION_TYPE_INVALID", "A subcommand group holds subcommands only"
            )
        if option.get("type") in (1, 2):  # subcommand (group): its own options
            if depth == 2:
                raise _form_error(where, "APPLICATION_COMMAND_OPTION_TYPE_INVALID", "Subcommands hold no subcommands")
            _check_options(f"{where}.options", option.get("options") or [], depth=1 if option["type"] == 2 else 2)
            continue
        if option.get("required"):
            if optional_seen:
                raise _form_error(
                    where,
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            optional_seen = True
        choices = option.get("choices") or []
        if len(choices) > MAX_CHOICES:
            raise _too_long(f"{where}.choices", MAX_CHOICES)
        if choices and option.get("autocomplete"):
            raise _form_error(
                where, "APPLICATION_COMMAND_AUTOCOMPLETE_CHOICES", "Autocomplete cannot be used with choices"
            )
        for j, choice in enumerate(choices):
            check_choice(f"{where}.choices.{j}", choice)


def check_choice(path: str, choice: dict[str, Any]) -> None:
    """A choice of a command option or of an autocomplete answer: its name and each translation 1–100."""
    names = [("name", choice.get("name") or "")]
    localizations = choice.get("name_localizations") or {}
    _check_locales(f"{path}.name_localizations", localizations)
    names += [(f"name_localizations.{locale}", text) for locale, text in localizations.items()]
    for field_path, text in names:
        if not 1 <= len(text) <= 100:
            raise _form_error(f"{path}.{field_path}", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    value = choice.get("value")
    if isinstance(value, str) and not 1 <= len(value) <= 100:
        raise _form_error(f"{path}.value", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")


def check_autocomplete(data: dict[str, Any]) -> None:
    """Interaction response type 8 (APPLICATION_COMMAND_AUTOCOMPLETE_RESULT): at most 25 choices."""
    choices = data.get("choices")
    if choices is None:
        raise _form_error("data.choices", "BASE_TYPE_REQUIRED", "This field is required")
    if len(choices) > MAX_AUTOCOMPLETE_CHOICES:
        raise _too_long("data.choices", MAX_AUTOCOMPLETE_CHOICES)
    for j, choice in enumerate(choices):
        check_choice(f"data.choices.{j}", choice)
