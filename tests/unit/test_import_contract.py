"""The layout's rules, read from the source with ``ast`` and checked at run time with ``-X importtime``.

A rule broken anywhere fails here with the file, the line and the import, so the layout holds without
anyone having to remember it (see DESIGN.md, "Target layout and its rules").
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What the bot outside its composition root (bot/cli) may use of the engine: the contract, its settings,
# the queue clients and the small helpers they run on. Pipelines, the worker and the models stay behind it.
ENGINE_FOR_THE_BOT = ("engine.contract", "engine.config", "engine.queue", "engine.background", "engine.timing")


@dataclass(frozen=True)
class Import:
    where: str  # the file, relative to the tree's root
    line: int
    module: str
    top_level: bool  # at module level, not inside a function or an `if`

    def __str__(self) -> str:
        return f"{self.where}:{self.line} imports {self.module}"


def _resolve(path: Path, node: ast.ImportFrom, root: Path) -> str:
    if not node.level:
        return node.module or ""
    package = list(path.relative_to(root).with_suffix("").parts)[: -node.level]
    return ".".join([*package, *([node.module] if node.module else [])])


def imports_of(path: Path, root: Path = ROOT) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module_level = {id(node) for node in tree.body}
    where = path.relative_to(root).as_posix()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(where, node.lineno, alias.name, id(node) in module_level)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(path, node, root)
            yield Import(where, node.lineno, base, id(node) in module_level)
            # `from engine import queue` imports engine.queue: check the submodule names too.
            for alias in node.names:
                yield Import(where, node.lineno, f"{base}.{alias.name}", id(node) in module_level)


def sources(*folders: str, root: Path = ROOT) -> list[Path]:
    return sorted(p for folder in folders for p in (root / folder).rglob("*.py"))


def within(module: str, *packages: str) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def violations(root: Path = ROOT) -> list[str]:
    """Every broken rule under ``root``, one line each."""
    found: list[str] = []

    for item in (i for p in sources("engine", root=root) for i in imports_of(p, root)):
        if within(item.module, "bot", "discord"):
            found.append(f"{item}: the engine never imports the bot or discord")

    contract = root / "engine" / "contract.py"
    if contract.exists():
        for item in imports_of(contract, root):
            top = item.module.split(".")[0]
            if top not in sys.stdlib_module_names and top != "__future__" and item.module != "engine.contract":
                found.append(f"{item}: the contract uses the standard library only")

    for item in (i for p in sources("bot/db", root=root) for i in imports_of(p, root)):
        top = item.module.split(".")[0]
        allowed = top in sys.stdlib_module_names or top in ("__future__", "sqlalchemy")
        if not (allowed or within(item.module, "engine.contract", "bot.db")):
            found.append(f"{item}: bot/db imports only sqlalchemy and the engine's contract")

    for item in (i for p in sources("bot/services", "bot/db", root=root) for i in imports_of(p, root)):
        if within(item.module, "discord", "bot.cogs", "bot.ui", "bot.app", "bot.cli"):
            found.append(f"{item}: services and the database layer never import discord or what uses it")

    for path in sources("bot/cogs", root=root):
        own = "bot.cogs." + path.stem
        for item in imports_of(path, root):
            if within(item.module, "bot.cogs") and item.module not in ("bot.cogs", own):
                found.append(f"{item}: no cog imports another cog (shared helpers live in bot/ui)")

    for path in sources("bot", root=root):
        if path.is_relative_to(root / "bot" / "cli"):
            continue
        for item in imports_of(path, root):
            if (
                within(item.module, "engine")
                and item.module != "engine"
                and not within(item.module, *ENGINE_FOR_THE_BOT)
            ):
                found.append(f"{item}: outside bot/cli the bot uses only the engine's contract and queue clients")

    for item in (i for p in sources("migrations", root=root) for i in imports_of(p, root)):
        # The engine migrates its database: only Alembic's autogenerate (inside a branch) may load the models.
        if item.top_level and within(item.module, "bot"):
            found.append(f"{item}: migrations load the bot's models only when autogenerating")

    for path in sources("bot", "engine", "migrations", "docker", root=root):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "redis.call(" in node.value:
                found.append(f"{path.relative_to(root)}:{node.lineno}: Lua lives in engine/queue/lua/*.lua")
    return found


def test_the_layout_rules_hold() -> None:
    assert violations() == []


def test_every_rule_catches_what_it_is_for(tmp_path: Path) -> None:
    """The checker itself, on a small tree that breaks each rule once."""
    files = {
        "engine/worker.py": "from bot.config import Settings\n",
        "engine/contract.py": "import pydantic\n",
        "engine/lazy.py": "def f():\n    import discord\n",
        "bot/db/models.py": "from bot.services import jobs\n",
        "bot/services/jobs.py": "import discord\n",
        "bot/cogs/imagine.py": "from bot.cogs.results import view\n",
        "bot/cogs/results.py": "from . import imagine\n",
        "bot/ui/views.py": "from engine.pipelines import registry\n",
        "bot/cli/wiring.py": "from engine.pipelines import registry\n",  # allowed: the composition root
        "migrations/env.py": "from bot.db import models\nif True:\n    from bot.db import base\n",
        "engine/queue/redis.py": "CLAIM = \"return redis.call('XADD', KEYS[1])\"\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")

    found = violations(tmp_path)

    expected = [
        "engine/worker.py:1 imports bot",
        "engine/lazy.py:2 imports discord",
        "engine/contract.py:1 imports pydantic",
        "bot/db/models.py:1 imports bot.services",
        "bot/services/jobs.py:1 imports discord",
        "bot/cogs/imagine.py:1 imports bot.cogs.results",
        "bot/cogs/results.py:1 imports bot.cogs.imagine",
        "bot/ui/views.py:1 imports engine.pipelines",
        "migrations/env.py:1 imports bot.db",
        "engine/queue/redis.py:1: Lua",
    ]
    for prefix in expected:
        assert any(line.startswith(prefix) for line in found), (prefix, found)
    assert not any(line.startswith("bot/cli/") for line in found)
    assert not any(line.startswith("migrations/env.py:3") for line in found)


def _modules_loaded(*command: str) -> set[str]:
    """The modules a command imports, from CPython's own ``-X importtime`` trace."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            loaded.add(line.rsplit("|", 1)[1].strip())
    assert "engine" in loaded, result.stderr[-2000:]
    return loaded


@pytest.mark.parametrize(
    "command",
    [("-m", "engine", "--help"), ("-c", "import sys; from bot.cli import main; sys.exit(main(['engine', '--help']))")],
    ids=["python -m engine", "atelier engine"],
)
def test_the_engine_starts_without_the_bot_or_discord(command: tuple[str, ...]) -> None:
    loaded = _modules_loaded(*command)
    # `atelier engine` goes through bot.cli's entry point, which hands over before importing anything else.
    from_the_bot = {m for m in loaded if within(m, "bot")} - {"bot", "bot.cli"}
    assert from_the_bot == set()
    assert not any(within(m, "discord") for m in loaded)
