"""A real redis-server on loopback for the Redis backend's tests: one per test session, on a free port,
persisting nothing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.queue.bench import local_redis_server


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a running redis-server. Without the binary the tests skip on a developer's machine,
    but fail in CI, where a skipped backend would pass unnoticed."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed: apt-get install redis-server (make test does)"
        if _in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    workdir: Path = tmp_path_factory.mktemp("redis")
    try:
        with local_redis_server(binary, workdir) as url:
            yield url
    except RuntimeError as error:
        pytest.fail(str(error))
