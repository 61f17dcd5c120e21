"""Fixtures shared by every test module (the functions live in ``helpers``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
from helpers import HttpStream, browser_missing, open_http_stream, serve_app


@pytest.fixture
def open_server() -> Callable[..., AbstractAsyncContextManager[str]]:
    """``async with open_server(app, **serve_kwargs) as url`` (see module doc)."""
    return serve_app


@pytest.fixture
def open_http() -> Callable[..., AbstractAsyncContextManager[HttpStream]]:
    """``async with open_http(url, path, ...) as http`` (see module doc)."""
    return open_http_stream


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
