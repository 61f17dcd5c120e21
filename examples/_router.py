"""A tiny raw-ASGI toolkit shared by the examples (no web framework needed).

``App`` routes ``(method, "/path/{param}")`` to handlers. A handler takes a
:class:`Request` and returns an ASGI application: one of the small responses
below, or a :class:`trio_sse.SseResponse`. ``App.background`` registers tasks
that run for the server's lifetime in a nursery owned by the ASGI lifespan;
tests without a lifespan run them with ``async with app.running():``.
``App.wrap`` runs the requests through an ASGI middleware.
"""

from __future__ import annotations

import argparse
import errno
import json
import mimetypes
import re
import signal
import sys
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

import trio_sse

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Handler = Callable[["Request"], Awaitable[ASGIApp]]

STATIC = Path(__file__).parent / "static"
MAX_BODY = 64 * 1024


class Request:
    """What a handler needs from an ``http`` scope."""

    def __init__(self, scope: Scope, receive: Receive, params: dict[str, str]) -> None:
        self.scope = scope
        self.receive = receive
        #: Values of the ``{name}`` parts of the route.
        self.params = params
        #: Query parameters (the last value of each name).
        self.query = dict(
            urllib.parse.parse_qsl(scope["query_string"].decode("latin-1"))
        )
        #: Request headers, lower-case names.
        self.headers = {
            k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope["headers"]
        }

    async def body(self) -> bytes:
        """The request body (at most 64 kB)."""
        chunks = bytearray()
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunks += message.get("body", b"")
            if len(chunks) > MAX_BODY:
                raise ValueError("request body too large")
            if not message.get("more_body", False):
                break
        return bytes(chunks)

    async def form(self) -> dict[str, str]:
        """The body as a form (urlencoded) or a JSON object of strings."""
        raw = await self.body()
        if self.headers.get("content-type", "").startswith("application/json"):
            data = json.loads(raw or b"{}")
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            return {str(k): str(v) for k, v in data.items()}
        return dict(urllib.parse.parse_qsl(raw.decode("utf-8")))


def response(
    body: bytes | str,
    *,
    status: int = 200,
    content_type: str = "text/plain; charset=utf-8",
    headers: dict[str, str] | None = None,
) -> ASGIApp:
    """A complete (non-streaming) response."""
    data = body.encode() if isinstance(body, str) else body
    raw_headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(data)).encode()),
    ]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": status, "headers": raw_headers}
        )
        await send({"type": "http.response.body", "body": data})

    return app


def html(body: str, status: int = 200) -> ASGIApp:
    return response(body, status=status, content_type="text/html; charset=utf-8")


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> ASGIApp:
    return response(
        json.dumps(obj),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def page(name: str, **values: str) -> ASGIApp:
    """``static/<name>`` as HTML, with ``{{key}}`` placeholders filled in."""
    text = (STATIC / name).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return html(text)


def static_file(name: str) -> ASGIApp:
    """A file of ``static/``, or 404."""
    path = (STATIC / name).resolve()
    if STATIC.resolve() not in path.parents or not path.is_file():
        return response("not found", status=404)
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type.endswith("javascript"):
        content_type += "; charset=utf-8"
    return response(
        path.read_bytes(),
        content_type=content_type,
        headers={"cache-control": "max-age=3600"},
    )


class App:
    """A routing ASGI application with lifespan-owned background tasks."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._background: list[Callable[[], Awaitable[None]]] = []
        #: Objects an example wants to reach later (tests use it).
        self.state: dict[str, Any] = {}
        self._dispatch: ASGIApp = self._route
        self.route("GET", "/static/{name}")(self._static)

    def route(self, method: str, path: str) -> Callable[[Handler], Handler]:
        """Register a handler for *method* and *path* (``{name}`` matches a segment)."""
        pattern = re.compile(
            "^" + re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$"
        )

        def register(handler: Handler) -> Handler:
            self._routes.append((method, pattern, handler))
            return handler

        return register

    def background(
        self, fn: Callable[[], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        """Run ``await fn()`` while the application runs."""
        self._background.append(fn)
        return fn

    def wrap(self, middleware: Callable[[ASGIApp], ASGIApp]) -> None:
        """Run every request (not the lifespan) through ``middleware(app)``."""
        self._dispatch = middleware(self._dispatch)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the background tasks for the duration of the block."""
        async with trio.open_nursery() as nursery:
            for fn in self._background:
                nursery.start_soon(fn)
            yield
            nursery.cancel_scope.cancel()

    @staticmethod
    async def _static(request: Request) -> ASGIApp:
        return static_file(request.params["name"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self._dispatch(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        allowed: list[str] = []
        for method, pattern, handler in self._routes:
            match = pattern.match(scope["path"])
            if match is None:
                continue
            if method != scope["method"]:
                allowed.append(method)
                continue
            params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            try:
                app = await handler(Request(scope, receive, params))
            except ValueError as exc:
                app = response(f"bad request: {exc}", status=400)
            await app(scope, receive, send)
            return
        if allowed:
            app = response(
                "method not allowed", status=405, headers={"allow": ", ".join(allowed)}
            )
        else:
            app = response("not found", status=404)
        await app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        async with self.running():
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


def run(app: ASGIApp, description: str, **serve_kwargs: Any) -> None:
    """The examples' ``main()``: parse ``--host``/``--port``, serve, print the URL.

    Ctrl+C and SIGTERM shut the server down gracefully and quietly; a port
    that is already taken is one line on stderr, with the fix.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="default: 8000")
    args = parser.parse_args()

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def serve(task_status: trio.TaskStatus[list[str]]) -> None:
                    await trio_sse.serve(
                        app,
                        args.host,
                        args.port,
                        task_status=task_status,
                        **serve_kwargs,
                    )
                    nursery.cancel_scope.cancel()

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()  # a graceful shutdown

                nursery.start_soon(stop_on_signal)
                for url in await nursery.start(serve):
                    print(f"{description}: open {url}/ (Ctrl+C to stop)", flush=True)

    try:
        trio.run(main)
    except BaseException as exc:
        if _find(exc, _address_in_use):
            sys.stderr.write(
                f"error: {args.host}:{args.port} is already in use (another "
                f"server, or another example?): run with --port {args.port + 1}, "
                "or any free port\n"
            )
            raise SystemExit(1) from None
        # A Ctrl+C before the signal receiver was installed surfaces as a
        # KeyboardInterrupt, maybe inside an exception group.
        if not _interrupted(exc):
            raise
    print("stopped")


def _address_in_use(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE


def _find(exc: BaseException, predicate: Callable[[BaseException], bool]) -> bool:
    """Whether *exc*, or an exception inside it (groups), satisfies *predicate*."""
    if predicate(exc):
        return True
    group: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
    return any(_find(e, predicate) for e in group)


def _interrupted(exc: BaseException) -> bool:
    """Whether *exc* is a KeyboardInterrupt, or a group of nothing else."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    group: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
    return bool(group) and all(_interrupted(e) for e in group)
