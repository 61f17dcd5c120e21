"""The package's import graph: one way from the broadcaster to the responses.

The response side (driver, transports, views) never imports the
broadcaster, and no module imports another that imports it back, lazily or
not: every import statement counts, wherever it sits.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import trio_sse

PACKAGE = Path(trio_sse.__file__).parent
RESPONSE_SIDE = [
    "trio_sse._driver",
    "trio_sse._response",
    "trio_sse._websocket",
    "trio_sse._asgi",
    "trio_sse._streams",
    "trio_sse._limits",
    "trio_sse._counters",
]
# Optional dependencies are imported only by their edge module.
EDGES = {
    "coredis": "trio_sse.redis",
    "httpx": "trio_sse.client",
    "starlette": "trio_sse.starlette",
    "fastapi": "trio_sse.starlette",
    "quart": "trio_sse.quart",
    "quart_trio": "trio_sse.quart",
    "prometheus_client": "trio_sse.metrics",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[str]:
    """Every module an import statement of ``path`` names (absolute)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {t for t in imports(path) if t in modules and t != "trio_sse"}
        for name, path in modules.items()
    }


def test_the_response_side_never_imports_the_broadcaster() -> None:
    edges = graph()
    for name in RESPONSE_SIDE:
        assert "trio_sse._broadcast" not in edges[name], name


def test_no_import_cycle() -> None:
    edges = graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for target in edges.get(name, ()):
            assert target not in path, " -> ".join([*path, target])
            if target not in done:
                visit(target, [*path, target])
        done.add(name)

    for name in edges:
        visit(name, [name])


def test_optional_dependencies_only_in_their_edges() -> None:
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        for target in imports(path):
            top = target.split(".")[0]
            if top in EDGES:
                assert name == EDGES[top], f"{name} imports {target}"
