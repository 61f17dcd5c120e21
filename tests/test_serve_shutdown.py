"""serve(): ``graceful_timeout`` bounds shutdown, stuck clients included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import trio
import trio.testing
from helpers import open_http_stream

import trio_sse
from trio_sse import Event, SseConfig, SseResponse

#: One large event, encoded once and sent again and again.
BIG = Event("x" * 60_000)


def backlog(yielded: list[int]) -> Any:
    """Streams :data:`BIG` forever; counts the events handed out."""

    async def events() -> AsyncIterator[Event]:
        while True:
            yielded[0] += 1
            yield BIG

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        config = SseConfig(write_timeout=None, keep_alive=None)
        await SseResponse(events(), config=config)(scope, receive, send)

    return app


async def test_grace_period_bounds_shutdown_with_clients_that_never_read() -> None:
    """Hypercorn's shielded writes to them end when the grace period does."""
    yielded = [0]
    grace = 1.0
    async with AsyncExitStack() as clients:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                urls = await nursery.start(
                    partial(
                        trio_sse.serve,
                        backlog(yielded),
                        "127.0.0.1",
                        0,
                        graceful_timeout=grace,
                    )
                )
                for i in range(5):
                    # Each client sends its request and never reads.
                    http = open_http_stream(urls[0], f"/{i}", rcvbuf=4096)
                    await clients.enter_async_context(http)
                # Every task blocked: the server's writes are stuck on full
                # socket buffers (nothing else blocks with these settings).
                await trio.testing.wait_all_tasks_blocked()
                assert yielded[0] > 5 * 10  # megabytes wait to be sent
                start = trio.current_time()
                nursery.cancel_scope.cancel()
        elapsed = trio.current_time() - start
    print(f"5 stuck clients: serve() returned {elapsed:.2f} s after cancel")
    assert grace <= elapsed < grace + 1.5
