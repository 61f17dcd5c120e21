"""Fixtures shared by every test module (the functions live in ``helpers``)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
from helpers import HttpStream, open_http_stream, serve_app


@pytest.fixture
def open_server() -> Callable[..., AbstractAsyncContextManager[str]]:
    """``async with open_server(app, **serve_kwargs) as url`` (see module doc)."""
    return serve_app


@pytest.fixture
def open_http() -> Callable[..., AbstractAsyncContextManager[HttpStream]]:
    """``async with open_http(url, path, ...) as http`` (see module doc)."""
    return open_http_stream
