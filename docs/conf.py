"""Sphinx configuration for the trio_sse documentation."""

from __future__ import annotations

import trio_sse

project = "trio_sse"
author = "trio_sse developers"
copyright = "2026, trio_sse developers"
release = trio_sse.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Every cross-reference must resolve: a page that names a class, function or
# module that does not exist fails the build.
nitpicky = True
# References that cannot resolve and are not errors. The docs build offline
# (no intersphinx inventories), so annotations naming the standard library
# or third-party packages have no target; type variables and private names
# that appear in signatures have no page of their own.
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(collections\.abc|datetime|enum|json|random|ssl|trio|httpx|hypercorn"
        r"|starlette|fastapi|quart|werkzeug|trio_websocket|coredis|anyio"
        r"|prometheus_client|gc)(\..*)?",
    ),
    (r"py:.*", r"(trio_sse\.(redis|_\w+)\.)?(K|T|U|E|K_contra|T_contra)"),
    # The stream driver's types appear in transport signatures; the driver
    # is described in responses.md, not in the reference.
    (r"py:.*", r"(trio_sse\._driver\.)?(End|Transport|MessageHandler|ChannelFunction)"),
    # The private base of the two reconnecting sources.
    (r"py:class", r"trio_sse\._reconnect\.ReconnectingSource.*"),
]
nitpick_ignore = [
    # Private names in public signatures.
    ("py:class", "_Subscription"),
    ("py:class", "EventLike"),
    ("py:class", "Message"),
    ("py:class", "BackgroundTask"),
    ("py:class", "Headers"),
    ("py:attr", "timeout"),
    # prometheus_client's, named unqualified in trio_sse.metrics' signatures.
    ("py:class", "CollectorRegistry"),
    # The shared pacing timers in WebSocketResponse.run (see responses.md).
    ("py:class", "trio_sse._pacing.Pacer"),
]

# The docs build offline: no intersphinx inventories are fetched.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

html_theme = "furo"
html_title = "trio_sse"
html_static_path = ["_static"]
exclude_patterns = ["_build"]
