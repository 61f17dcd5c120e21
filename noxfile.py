"""Developer sessions: ``nox -s tests lint typecheck docs``; ``bench`` on demand."""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs", "package"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite: real Hypercorn servers, redis-server, Chromium."""
    session.install(
        "-e", ".[test,client,redis,starlette,fastapi,quart,websocket,metrics]"
    )
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install(
        "-e", ".[client,redis,starlette,fastapi,quart,websocket,metrics]", "mypy"
    )
    session.run("mypy", "--strict", "trio_sse")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx docs with warnings as errors."""
    session.install(
        "-e", ".[docs,client,redis,starlette,fastapi,quart,websocket,metrics]"
    )
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session
def package(session: nox.Session) -> None:
    """Build the sdist and the wheel as a release would; check them with twine."""
    session.install("build", "twine")
    outdir = Path(session.create_tmp()) / "dist"
    shutil.rmtree(outdir, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(outdir))
    dists = [str(path) for path in outdir.glob("trio_sse-*")]
    if len(dists) != 2:
        session.error(f"expected an sdist and a wheel, got {dists}")
    session.run("twine", "check", "--strict", *dists)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against the peers, real publishers (not CI): ratios, table, plot.

    ``nox -s bench -- --quick`` for the short run; other arguments go to
    ``benchmarks/run.py`` (``--variants response,cast``, ``--trio-sse-tree DIR``).
    """
    session.run("python", "benchmarks/run.py", *session.posargs, external=True)
