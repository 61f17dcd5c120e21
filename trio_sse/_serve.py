"""Run an ASGI application on Hypercorn's trio worker inside your nursery."""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

import hypercorn.config
import hypercorn.trio
import trio

from ._config import SseConfig
from ._shutdown import ShutdownSignal

__all__ = ["SHUTDOWN_SCOPE_KEY", "serve"]

#: The ASGI scope key under which :func:`serve` puts its
#: :class:`~trio_sse.ShutdownSignal`; streaming responses end cleanly when
#: it is set.
SHUTDOWN_SCOPE_KEY = "trio_sse.shutdown"

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

# The kernel option is an unsigned int of milliseconds.
_MAX_USER_TIMEOUT_MS = 2**31 - 1


def _user_timeout_ms(write_timeout: float | None) -> int | None:
    """``TCP_USER_TIMEOUT`` for *write_timeout*, or ``None`` to leave it unset."""
    if write_timeout is None or write_timeout <= 0:
        return None
    return max(1, min(round(write_timeout * 1000), _MAX_USER_TIMEOUT_MS))


async def _listen(
    host: str, port: int, write_timeout: float | None, backlog: int
) -> socket.socket:
    """Open the listening socket that accepted connections inherit options from.

    ``TCP_USER_TIMEOUT`` makes the kernel abort a connection whose sent data
    stays unacknowledged (or whose peer keeps a zero window) for longer than
    *write_timeout*: a client that stops reading is dropped even though
    Hypercorn writes under a shielded cancel scope. Where the option does not
    exist (not Linux) the socket is opened without it.
    """
    infos = await trio.socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, type_, proto, _canonname, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        timeout_ms = _user_timeout_ms(write_timeout)
        user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
        if timeout_ms is not None and user_timeout is not None:
            sock.setsockopt(socket.IPPROTO_TCP, user_timeout, timeout_ms)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class _PremadeSocketConfig(hypercorn.config.Config):
    """Hypercorn settings whose :meth:`create_sockets` hands over one open socket.

    ``create_sockets()`` is Hypercorn's extension point for sockets made
    elsewhere: the worker listens on what it returns instead of binding
    ``bind`` itself.
    """

    premade_socket: socket.socket | None = None

    def create_sockets(self) -> hypercorn.config.Sockets:
        sock = self.premade_socket
        if sock is None:
            return super().create_sockets()
        if self.ssl_enabled:
            return hypercorn.config.Sockets([sock], [], [])
        return hypercorn.config.Sockets([], [sock], [])


def _hypercorn_config(
    base: hypercorn.config.Config | None, graceful_timeout: float | None
) -> _PremadeSocketConfig:
    """A private copy of *base* (never mutated), or quiet defaults."""
    config = _PremadeSocketConfig()
    if base is None:
        # A logger object, not "-": Hypercorn would otherwise replace the
        # handlers of the process-wide "hypercorn.error" logger.
        config.errorlog = logging.getLogger("hypercorn.error")
        config.accesslog = None
    else:
        vars(config).update(vars(base))
    if graceful_timeout is not None:
        config.graceful_timeout = graceful_timeout
    return config


async def _lifespan(app: _App, scope: _Scope, receive: _Receive, send: _Send) -> None:
    """Run *app*'s lifespan, and finish the protocol for it if it returns early.

    Many small ASGI apps return at once from a scope they do not handle;
    Hypercorn's trio worker then fails at startup. Here an app that returns
    without answering gets a no-op lifespan instead.
    """
    received: set[str] = set()
    sent: set[str] = set()

    async def tracked_receive() -> MutableMapping[str, Any]:
        message = await receive()
        received.add(message["type"])
        return message

    async def tracked_send(message: MutableMapping[str, Any]) -> None:
        sent.add(message["type"])
        await send(message)

    await app(scope, tracked_receive, tracked_send)
    if sent & {"lifespan.startup.failed", "lifespan.shutdown.failed"}:
        return
    if "lifespan.startup.complete" not in sent:
        if "lifespan.startup" not in received:
            await receive()
        await send({"type": "lifespan.startup.complete"})
    if "lifespan.shutdown.complete" not in sent:
        if "lifespan.shutdown" not in received:
            await receive()
        await send({"type": "lifespan.shutdown.complete"})


def _wrap(app: _App, shutdown: ShutdownSignal) -> _App:
    """Wrap *app* so every http and websocket scope carries *shutdown*."""

    async def asgi(scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(app, scope, receive, send)
            return
        if scope["type"] in ("http", "websocket"):
            scope = dict(scope)
            scope[SHUTDOWN_SCOPE_KEY] = shutdown
        await app(scope, receive, send)

    return asgi


async def serve(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    config: SseConfig | None = None,
    hypercorn_config: hypercorn.config.Config | None = None,
    graceful_timeout: float | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI application *app* with Hypercorn's trio worker.

    Runs until cancelled, inside the caller's nursery::

        async with trio.open_nursery() as nursery:
            urls = await nursery.start(trio_sse.serve, app, "127.0.0.1", 0)
            print(urls[0])  # "http://127.0.0.1:PORT"

    ``nursery.start`` returns the bound addresses as a list of URL strings;
    with ``port=0`` the kernel picks a free port and the URL says which.

    The listening socket is opened here with ``TCP_USER_TIMEOUT`` set to
    ``config.write_timeout`` (Linux), so the kernel aborts a connection to a
    client that stops reading; the application then receives
    ``http.disconnect``.

    Every ``http`` and ``websocket`` scope carries a
    :class:`~trio_sse.ShutdownSignal` under ``scope["trio_sse.shutdown"]``,
    one per call, set when shutdown begins:
    :class:`~trio_sse.SseResponse` ends its stream cleanly when it is set.

    Cancelling the caller's scope shuts down gracefully: the event is set,
    Hypercorn stops accepting, open connections get ``graceful_timeout``
    seconds (default: ``hypercorn_config.graceful_timeout``, 3 s) to finish,
    the lifespan shutdown runs, and whatever still runs when the timeout
    expires is cancelled. Then the cancellation propagates.

    :param app: an ASGI 3 application; lifespan events reach it as usual.
    :param host: interface to listen on; ``""`` listens on all of them.
    :param port: TCP port; ``0`` picks a free one.
    :param config: the stream settings; only ``write_timeout`` is used here.
    :param hypercorn_config: further Hypercorn settings (TLS, HTTP/2, logs).
        It is copied, never modified; its ``bind`` is ignored in favour of
        *host* and *port*. Without it, the access log is off and errors go
        to the ``hypercorn.error`` logger.
    :param graceful_timeout: seconds between the start of shutdown and the
        cancellation of whatever still runs.
    """
    sse_config = config if config is not None else SseConfig()
    hc_config = _hypercorn_config(hypercorn_config, graceful_timeout)
    grace = float(hc_config.graceful_timeout)
    shutdown = ShutdownSignal()  # tells the application
    stop = trio.Event()  # tells Hypercorn (its shutdown_trigger)
    asgi = _wrap(app, shutdown)

    with await _listen(host, port, sse_config.write_timeout, hc_config.backlog) as sock:
        # Hypercorn listens on this very socket (through create_sockets());
        # the ``with`` block closes it whatever happens.
        hc_config.premade_socket = sock
        run_scope = trio.CancelScope()

        async def run_hypercorn(
            task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            with run_scope:
                await hypercorn.trio.serve(
                    cast(Any, asgi),
                    hc_config,
                    shutdown_trigger=stop.wait,
                    task_status=task_status,
                    mode="asgi",
                )
            # Hypercorn ended by itself (or its hard deadline passed).
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(run_hypercorn)
            # From now on Hypercorn only stops through the trigger below,
            # so that a cancelled caller still gets a graceful shutdown.
            run_scope.shield = True
            task_status.started(binds)
            try:
                await trio.sleep_forever()
            finally:
                shutdown.set()
                stop.set()
                run_scope.deadline = trio.current_time() + grace
