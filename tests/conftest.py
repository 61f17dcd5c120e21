"""Fixtures shared by every test module (the functions live in ``helpers``)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import ModuleType

import pytest
from helpers import (
    HttpStream,
    RedisCluster,
    RedisServer,
    browser_missing,
    open_http_stream,
    serve_app,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """``load(name)`` imports ``examples/<name>.py`` (it imports ``_router``
    from its folder) and returns the module."""
    monkeypatch.syspath_prepend(str(EXAMPLES))

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(
            f"example_{name}", EXAMPLES / f"{name}.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def open_server() -> Callable[..., AbstractAsyncContextManager[str]]:
    """``async with open_server(app, **serve_kwargs) as url`` (see module doc)."""
    return serve_app


@pytest.fixture
def open_http() -> Callable[..., AbstractAsyncContextManager[HttpStream]]:
    """``async with open_http(url, path, ...) as http`` (see module doc)."""
    return open_http_stream


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free port, stopped after the test.

    Skips with the name of the Debian package when the binary is missing,
    except under ``CI=true``, where the Redis tests must run.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server not found: apt-get install redis-server"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: not skipping)")
        pytest.skip(message)
    server = RedisServer(binary, tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A real 3-node Redis Cluster, created with ``redis-cli --cluster create``.

    Skips (fails under ``CI=true``) like ``redis_server`` when the binaries
    are missing.
    """
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        message = "redis-server/redis-cli not found: apt-get install redis-server"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: not skipping)")
        pytest.skip(message)
    cluster = RedisCluster(binary, cli, tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def browser_required() -> None:
    """Skip a browser test when Chromium or playwright-core is missing
    (fail instead when ``CI=true``)."""
    missing = browser_missing()
    if missing:
        message = "browser test needs: " + "; ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: not skipping)")
        pytest.skip(message)
