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
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False

# The docs build offline: no intersphinx inventories are fetched.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

html_theme = "furo"
html_title = "trio_sse"
html_static_path = ["_static"]
exclude_patterns = ["_build"]
suppress_warnings = ["myst.xref_missing"]
