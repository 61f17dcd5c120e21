"""WebSocketResponse: event streams as WebSocket text messages.

In memory (``helpers.open_websocket_app``) under ``MockClock`` for the
driver's timing and the close codes; over a real Hypercorn-trio server with
the trio-websocket client for the wire.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
import trio.testing
import trio_websocket
from helpers import open_websocket_app, serve_app

import trio_sse
from trio_sse import (
    Broadcaster,
    Event,
    EventParser,
    LagPolicy,
    ShutdownSignal,
    SseConfig,
    WebSocketResponse,
    last_event_id,
)
from trio_sse._driver import End
from trio_sse._websocket import CLOSE_CODES, close_code
from trio_sse.websocket import (
    NetworkError,
    ReadTimeout,
    StreamRequest,
    WebSocketSourceError,
    open_websocket_source,
    serve_websocket,
)

ITEMS = [
    Event("hello", event="greeting", id="1"),
    Event.json({"n": 2, "text": "ünïcode ✓"}, id="2"),
    Event("line one\nline two", id="3"),
]


def expected(items: list[Event]) -> list[tuple[str, str, str]]:
    return [(e.event or "message", e.data or "", e.id or "") for e in items]


def seen(events: list[Any]) -> list[tuple[str, str, str]]:
    return [(e.type, e.data, e.last_event_id) for e in events]


async def aiter_items(items: list[Event]) -> AsyncIterator[Event]:
    for item in items:
        yield item


# -- the close codes ------------------------------------------------------------


def test_every_end_has_a_close_code() -> None:
    assert set(CLOSE_CODES) == set(End)
    assert close_code(End.ENDED) == 1000
    assert close_code(End.SHUTDOWN) == 1001
    assert close_code(End.FAILED) == 1011


async def test_stream_end_closes_with_1000(autojump_clock: object) -> None:
    response = WebSocketResponse(aiter_items(ITEMS))
    async with open_websocket_app(response) as ws:
        assert ws.accepted
        await ws.read_to_close()
    assert seen(ws.events) == expected(ITEMS)
    assert ws.close_code == 1000
    assert response.end is End.ENDED
    # Each message parses on its own: complete blocks or one comment.
    for text in ws.texts:
        assert text.endswith("\n\n") or text == ":\n"
        EventParser().feed(text.encode())


async def test_opening_retry_and_keep_alive_are_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, receive = trio.open_memory_channel[Event](10)
    config = SseConfig(keep_alive=5, retry=2)
    async with open_websocket_app(WebSocketResponse(receive, config=config)) as ws:
        assert await ws.receive_text() == "retry: 2000\n\n"
        start = trio.current_time()
        assert await ws.receive_text() == ":\n"
        assert trio.current_time() - start == pytest.approx(5)
        send.send_nowait(Event("x"))
        assert (await ws.receive_event()).data == "x"
        # Keep-alive restarts with every event.
        sent = trio.current_time()
        assert await ws.receive_text() == ":\n"
        assert trio.current_time() - sent == pytest.approx(5)
    assert ws.close_code is None  # the client left: nothing to close


async def test_ready_events_are_coalesced_into_one_message(
    autojump_clock: object,
) -> None:
    send, receive = trio.open_memory_channel[Event](10)
    async with open_websocket_app(WebSocketResponse(receive)) as ws:
        assert await ws.receive_text() == ":\n"
        for item in ITEMS:
            send.send_nowait(item)
        text = await ws.receive_text()
        assert seen(EventParser().feed(text.encode())) == expected(ITEMS)


async def test_client_disconnect_closes_the_stream(autojump_clock: object) -> None:
    bc: Broadcaster[str, Event] = Broadcaster()
    response = bc.websocket(bc.subscribe("k"))
    async with open_websocket_app(response) as ws:
        await ws.receive_text()
        assert bc.subscriber_count("k") == 1
        ws.disconnect(1001)
        with trio.fail_after(1):
            await ws.read_to_close()
    assert bc.subscriber_count("k") == 0
    assert response.end is End.DISCONNECTED
    assert ws.close_code is None


async def test_server_shutdown_closes_with_1001(autojump_clock: object) -> None:
    shutdown = ShutdownSignal()
    send, receive = trio.open_memory_channel[Event](10)
    config = SseConfig(shutdown_retry=1.5)
    response = WebSocketResponse(receive, config=config)
    async with open_websocket_app(response, shutdown=shutdown) as ws:
        await ws.receive_text()
        send.send_nowait(Event("before"))
        shutdown.set()
        await ws.read_to_close()
    assert [e.data for e in ws.events] == ["before"]
    assert ws.texts[-1].endswith("retry: 1500\n\n")
    assert ws.close_code == 1001
    assert response.end is End.SHUTDOWN


async def test_source_failure_closes_with_1011_and_is_logged(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> AsyncIterator[Event]:
        yield Event("one")
        raise RuntimeError("boom")

    async with open_websocket_app(WebSocketResponse(broken())) as ws:
        await ws.read_to_close()
    assert [e.data for e in ws.events] == ["one"]
    assert ws.close_code == 1011
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


async def test_on_message_round_trip(autojump_clock: object) -> None:
    send, receive = trio.open_memory_channel[Event](10)
    got: list[str] = []

    async def on_message(text: str) -> None:
        got.append(text)
        await send.send(Event(f"echo {text}"))

    async with open_websocket_app(
        WebSocketResponse(receive, on_message=on_message)
    ) as ws:
        await ws.receive_text()
        ws.send_bytes(b"ignored")
        ws.send_text("hi")
        assert (await ws.receive_event()).data == "echo hi"
        ws.send_text("there")
        assert (await ws.receive_event()).data == "echo there"
    assert got == ["hi", "there"]


async def test_on_message_error_closes_with_1011_and_is_logged(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    async def on_message(text: str) -> None:
        raise ValueError(f"bad message {text!r}")

    _send, receive = trio.open_memory_channel[Event](10)
    response = WebSocketResponse(receive, on_message=on_message)
    async with open_websocket_app(response) as ws:
        await ws.receive_text()
        ws.send_text("x")
        await ws.read_to_close()
    assert ws.close_code == 1011
    assert response.end is End.FAILED
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failed and "bad message 'x'" in str(failed[0].exc_info[1])  # type: ignore[index]


async def test_a_client_that_stops_reading_is_cut_off(
    autojump_clock: object,
) -> None:
    bc: Broadcaster[str, Event] = Broadcaster(buffer=1000)
    config = SseConfig(write_timeout=10, keep_alive=3)
    response = WebSocketResponse(bc.subscribe("k"), config=config)
    async with open_websocket_app(response) as ws:
        await ws.receive_text()
        bc.send("k", Event("unread"))
        start = trio.current_time()
        with trio.fail_after(60):
            await ws.app_done.wait()
        # Cut off at the write timeout; the close frame gets 1 s at most.
        assert 10 <= trio.current_time() - start <= 11
        assert bc.subscriber_count("k") == 0
    assert response.end is End.TIMED_OUT


async def test_last_event_id_from_the_query_replays(autojump_clock: object) -> None:
    bc: Broadcaster[str, Event] = Broadcaster(history=10)
    ids = [await bc.publish("k", Event(str(n))) for n in range(5)]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        stream = bc.subscribe("k", last_event_id=last_event_id(scope))
        await bc.websocket(stream)(scope, receive, send)

    async with open_websocket_app(app, f"/?lastEventId={ids[1]}") as ws:
        got = [await ws.receive_event() for _ in range(3)]
        bc.send("k", Event("5"))
        got.append(await ws.receive_event())
    assert [e.data for e in got] == ["2", "3", "4", "5"]
    assert [e.last_event_id for e in got[:3]] == ids[2:]


async def test_lag_end_closes_with_1000(autojump_clock: object) -> None:
    bc: Broadcaster[str, Event] = Broadcaster(buffer=2)
    stream = bc.subscribe("k").on_lag(LagPolicy.END)
    for n in range(5):
        bc.send("k", Event(str(n)))
    async with open_websocket_app(bc.websocket(stream)) as ws:
        await ws.read_to_close()
    assert [e.data for e in ws.events] == ["0", "1"]
    assert ws.close_code == 1000


# -- every kind of source -------------------------------------------------------


async def _memory_channel(items: list[Event]) -> Any:
    send, receive = trio.open_memory_channel[Event](len(items))
    for item in items:
        send.send_nowait(item)
    send.close()
    return receive


async def _generator(items: list[Event]) -> Any:
    return aiter_items(items)


async def _anyio_stream(items: list[Event]) -> Any:
    send, receive = anyio.create_memory_object_stream[Event](len(items))
    for item in items:
        send.send_nowait(item)
    send.close()
    return receive


async def _broadcast_stream(items: list[Event]) -> Any:
    bc: Broadcaster[str, Event] = Broadcaster()
    stream = bc.subscribe("k")
    for item in items:
        bc.send("k", item)
    bc.remove("k")  # the stream ends after what it holds
    return stream


@pytest.mark.parametrize(
    "make",
    [_memory_channel, _generator, _anyio_stream, _broadcast_stream],
    ids=lambda f: f.__name__,
)
async def test_sources_stream_through_a_websocket(
    make: Callable[[list[Event]], Any], autojump_clock: object
) -> None:
    source = await make(ITEMS)
    async with open_websocket_app(WebSocketResponse(source)) as ws:
        await ws.read_to_close()
    assert seen(ws.events) == expected(ITEMS)
    assert ws.close_code == 1000


async def test_a_safe_channel_streams_through_a_websocket(
    autojump_clock: object,
) -> None:
    @trio.as_safe_channel
    async def events() -> AsyncIterator[Event]:
        for item in ITEMS:
            yield item

    async with (
        events() as channel,
        open_websocket_app(WebSocketResponse(channel)) as ws,
    ):
        await ws.read_to_close()
    assert seen(ws.events) == expected(ITEMS)
    assert ws.close_code == 1000


async def test_broadcaster_websocket_fills_ids_and_casts_strings(
    autojump_clock: object,
) -> None:
    bc: Broadcaster[str, Any] = Broadcaster()
    stream = bc.subscribe("k").on_lag(LagPolicy.END)
    first = await bc.publish("k", "plain")
    second = await bc.publish("k", Event("named", event="n"))
    bc.remove("k")
    async with open_websocket_app(bc.websocket(stream)) as ws:
        await ws.read_to_close()
    assert seen(ws.events) == [("message", "plain", first), ("n", "named", second)]


# -- misuse ---------------------------------------------------------------------


async def test_http_scope_is_refused() -> None:
    response = WebSocketResponse(aiter_items([]))
    with pytest.raises(TypeError, match="'websocket' scopes only"):
        await response({"type": "http"}, None, None)  # type: ignore[arg-type]


def test_a_non_stream_is_refused() -> None:
    with pytest.raises(TypeError, match="call it"):
        WebSocketResponse(aiter_items)  # type: ignore[arg-type]


async def test_a_client_gone_before_connect_closes_the_source() -> None:
    closed = trio.Event()

    async def gen() -> AsyncIterator[Event]:
        try:
            yield Event("never")
        finally:
            closed.set()

    stream = gen()
    await stream.__anext__()

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.disconnect", "code": 1006}

    async def send(message: Any) -> None:
        raise AssertionError(message)

    response = WebSocketResponse(stream)
    await response({"type": "websocket"}, receive, send)
    assert closed.is_set()
    assert response.end is End.DISCONNECTED


# -- over a real Hypercorn-trio server, with the trio-websocket client -----------


class WsServer:
    """``/feed``: the ``feed`` key, resumed by ``lastEventId``; messages echo.

    Each connection reports its subscription on ``joined`` and its end on
    ``ended``: tests wait on those, never on the clock.
    """

    def __init__(
        self,
        config: SseConfig | None = None,
        *,
        buffer: int = 128,
        history: int = 100,
        lag_end: bool = False,
    ) -> None:
        self.bc: Broadcaster[str, Event] = Broadcaster(
            buffer=buffer, history=history, config=config or SseConfig()
        )
        self.lag_end = lag_end
        self.resumed: list[str | None] = []
        self._joined_send, self.joined = trio.open_memory_channel[None](math.inf)
        self._ended_send, self.ended = trio.open_memory_channel[End | None](math.inf)

    async def on_message(self, text: str) -> None:
        await self.bc.publish("feed", Event(text, event="said"))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        resume = last_event_id(scope)
        self.resumed.append(resume)
        stream = self.bc.subscribe("feed", last_event_id=resume)
        if self.lag_end:
            stream = stream.on_lag(LagPolicy.END)
        response = self.bc.websocket(stream, on_message=self.on_message)
        self._joined_send.send_nowait(None)
        try:
            await response(scope, receive, send)
        finally:
            self._ended_send.send_nowait(response.end)


def ws_url(url: str, path: str = "/feed") -> str:
    return url.replace("http://", "ws://", 1) + path


async def test_hypercorn_named_json_and_multiline_events() -> None:
    server = WsServer()
    with trio.fail_after(10):
        async with (
            serve_app(server) as url,
            open_websocket_source(ws_url(url)) as source,
            trio.open_nursery() as nursery,
        ):

            async def publish() -> None:
                await server.joined.receive()
                for item in ITEMS:
                    await server.bc.publish("feed", item)

            nursery.start_soon(publish)
            got = [await source.__anext__() for _ in ITEMS]
    assert [(e.type, e.data) for e in got] == [
        (e.event or "message", e.data) for e in ITEMS
    ]
    assert json.loads(got[1].data) == {"n": 2, "text": "ünïcode ✓"}
    assert got[2].data == "line one\nline two"


async def test_hypercorn_replay_with_last_event_id() -> None:
    server = WsServer()
    ids = [await server.bc.publish("feed", Event(str(n))) for n in range(5)]
    with trio.fail_after(10):
        async with (
            serve_app(server) as url,
            open_websocket_source(ws_url(url), last_event_id=ids[1]) as source,
        ):
            got = [await source.__anext__() for _ in range(3)]
            ids.append(await server.bc.publish("feed", Event("5")))
            got.append(await source.__anext__())
    assert server.resumed == [ids[1]]
    assert [e.data for e in got] == ["2", "3", "4", "5"]  # no gap, no duplicate
    assert [e.last_event_id for e in got] == ids[2:]


async def test_hypercorn_keep_alive_messages() -> None:
    server = WsServer(SseConfig(keep_alive=0.05))
    with trio.fail_after(10):
        async with (
            serve_app(server) as url,
            trio_websocket.open_websocket_url(ws_url(url)) as ws,
        ):
            messages = [await ws.get_message() for _ in range(3)]
    assert messages == [":\n", ":\n", ":\n"]


async def test_hypercorn_lag_end_closes_and_the_client_resumes() -> None:
    server = WsServer(buffer=4, lag_end=True)
    with trio.fail_after(10):
        async with (
            serve_app(server) as url,
            open_websocket_source(ws_url(url), retry=0.01) as source,
            trio.open_nursery() as nursery,
        ):

            async def publish() -> None:
                await server.joined.receive()
                # No checkpoint between sends: the subscriber lags at once.
                for n in range(10):
                    server.bc.send("feed", Event(str(n)))

            nursery.start_soon(publish)
            got = [await source.__anext__() for _ in range(10)]
            assert await server.ended.receive() is End.ENDED
    assert [e.data for e in got] == [str(n) for n in range(10)]
    assert source.close_code == 1000
    assert source.reconnects == 1
    assert server.resumed[1] == got[3].last_event_id


async def test_hypercorn_shutdown_closes_with_1001_and_the_client_reconnects() -> None:
    server = WsServer(SseConfig(shutdown_retry=0.01))
    with trio.fail_after(15):
        async with trio.open_nursery() as outer:
            first = trio.CancelScope()
            first_done = trio.Event()

            async def serve_first(task_status: trio.TaskStatus[str]) -> None:
                with first:
                    async with serve_app(server) as url:
                        task_status.started(url)
                        await trio.sleep_forever()
                first_done.set()

            url = await outer.start(serve_first)
            port = int(url.rsplit(":", 1)[1])
            got_send, got = trio.open_memory_channel[Any](math.inf)
            async with open_websocket_source(ws_url(url), retry=5) as source:

                async def read() -> None:
                    async for event in source:
                        got_send.send_nowait(event)

                outer.start_soon(read)
                await server.joined.receive()
                await server.bc.publish("feed", Event("before"))
                before = await got.receive()
                first.cancel()
                assert await server.ended.receive() is End.SHUTDOWN
                await first_done.wait()
                # A new server on the same port; the client comes back to it
                # after the final retry: (10 ms, not its own 5 s) with its id.
                async with trio.open_nursery() as second:
                    await second.start(trio_sse.serve, server, "127.0.0.1", port)
                    await server.joined.receive()
                    await server.bc.publish("feed", Event("after"))
                    event = await got.receive()
                    second.cancel_scope.cancel()
                outer.cancel_scope.cancel()
    assert before.data == "before"
    assert event.data == "after"
    assert source.close_code == 1001
    assert source.retry == pytest.approx(0.01)  # the server's retry: won
    assert source.reconnects == 1
    assert server.resumed == [None, before.last_event_id]


async def test_hypercorn_on_message_round_trip() -> None:
    server = WsServer()
    with trio.fail_after(10):
        async with (
            serve_app(server) as url,
            trio_websocket.open_websocket_url(ws_url(url)) as ws,
        ):
            assert await ws.get_message() == ":\n"
            await ws.send_message("hello over there")
            events = EventParser().feed((await ws.get_message()).encode())  # type: ignore[union-attr]
    assert [(e.type, e.data) for e in events] == [("said", "hello over there")]


async def test_hypercorn_a_client_that_stops_reading_is_cut_off() -> None:
    write_timeout = 1.0
    config = SseConfig(keep_alive=None, write_timeout=write_timeout)
    server = WsServer(config, buffer=100_000, history=0)
    payload = "x" * 4000
    with trio.fail_after(write_timeout + 15):
        async with (
            serve_app(server, config=config) as url,
            trio.open_nursery() as nursery,
        ):

            async def publish() -> None:
                n = 0
                while True:
                    n += 1
                    server.bc.send("feed", Event(f"{n} {payload}"))
                    await trio.sleep(0.002)

            async with trio_websocket.open_websocket_url(
                ws_url(url), message_queue_size=1, receive_buffer_size=4096
            ):
                await server.joined.receive()
                start = trio.current_time()
                nursery.start_soon(publish)
                end = await server.ended.receive()  # never reading a message
                dropped = trio.current_time() - start
                nursery.cancel_scope.cancel()
    # The driver's watchdog (TIMED_OUT) or, on a loaded machine, the
    # kernel's TCP_USER_TIMEOUT that serve() sets to the same write_timeout
    # (the write fails: DISCONNECTED) cuts the client off, on time either way.
    assert end in (End.TIMED_OUT, End.DISCONNECTED)
    assert server.bc.subscriber_count("feed") == 0
    assert write_timeout * 0.9 < dropped < write_timeout + 5


async def test_serve_websocket_in_a_plain_trio_program() -> None:
    bc: Broadcaster[str, Event] = Broadcaster(history=10)
    said: list[str] = []

    async def on_message(text: str) -> None:
        said.append(text)
        await bc.publish("room", Event(text, event="said"))

    async def handler(request: StreamRequest) -> Any:
        if request.path != "/room":
            return None
        stream = bc.subscribe("room", last_event_id=request.last_event_id)
        return bc.websocket(stream, on_message=on_message)

    first = await bc.publish("room", Event("first"))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server_scope = trio.CancelScope()

            async def run_server(task_status: trio.TaskStatus[Any]) -> None:
                with server_scope:
                    await serve_websocket(
                        handler,
                        "127.0.0.1",
                        0,
                        graceful_timeout=5,
                        task_status=task_status,
                    )

            ws_server = await nursery.start(run_server)
            base = f"ws://127.0.0.1:{ws_server.port}"
            async with open_websocket_source(base + "/nope") as refused:
                with pytest.raises(WebSocketSourceError) as error:
                    await refused.__anext__()
            assert error.value.status == 404
            second = await bc.publish("room", Event("second"))  # replayed
            async with open_websocket_source(
                base + "/room", last_event_id=first, max_reconnects=0
            ) as source:
                events = [await source.__anext__()]
                await source.send("hi")
                events.append(await source.__anext__())
                started = trio.current_time()
                server_scope.cancel()
                events += [event async for event in source]
                stopped = trio.current_time() - started
    assert [(e.type, e.data) for e in events] == [
        ("message", "second"),
        ("said", "hi"),
    ]
    assert events[0].last_event_id == second
    assert said == ["hi"]
    assert source.close_code == 1001
    assert stopped < 1  # no wait for the grace period


async def test_websocket_source_refused_handshake_raises() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1000})

    with trio.fail_after(10):
        async with serve_app(app) as url, open_websocket_source(ws_url(url)) as source:
            with pytest.raises(WebSocketSourceError) as refused:
                await source.__anext__()
    assert refused.value.status == 403


async def test_websocket_source_reconnects_after_a_refused_connection() -> None:
    server = WsServer()
    with trio.fail_after(10):
        async with serve_app(server) as url:
            port = int(url.rsplit(":", 1)[1])
        # Nothing listens now: the source backs off and retries.
        async with open_websocket_source(
            ws_url(url), retry=0.01, max_reconnects=2
        ) as source:
            with pytest.raises(NetworkError):
                await source.__anext__()
    assert source.reconnects == 2
    assert port


# -- the chat example over WebSocket ----------------------------------------------


@pytest.fixture
def chat_ws(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``examples/chat_ws.py`` (it imports ``_router`` from its folder)."""
    examples = Path(__file__).resolve().parent.parent / "examples"
    monkeypatch.syspath_prepend(str(examples))
    spec = importlib.util.spec_from_file_location(
        "example_chat_ws", examples / "chat_ws.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_chat_ws_posts_and_presence(chat_ws: Any, autojump_clock: object) -> None:
    app = chat_ws.make_app()
    async with open_websocket_app(app, "/rooms/lobby/ws") as alice:
        assert json.loads((await alice.receive_event()).data) == {"online": 1}
        async with open_websocket_app(app, "/rooms/lobby/ws") as bob:
            assert json.loads((await bob.receive_event()).data) == {"online": 2}
            assert json.loads((await alice.receive_event()).data) == {"online": 2}
            bob.send_text("not json")
            bob.send_text(json.dumps({"user": "bob", "text": "  "}))
            bob.send_text(json.dumps({"user": "bob", "text": "hi all"}))
            got = await alice.receive_event()
        left = await alice.receive_event()
    assert got.type == "message"
    assert {k: v for k, v in json.loads(got.data).items() if k != "time"} == {
        "user": "bob",
        "text": "hi all",
    }
    assert got.last_event_id
    assert (left.type, json.loads(left.data)) == ("presence", {"online": 1})
    assert bob.close_code is None  # the malformed messages did not close it


async def test_chat_ws_replays_with_last_event_id(
    chat_ws: Any, autojump_clock: object
) -> None:
    app = chat_ws.make_app()
    async with open_websocket_app(app, "/rooms/r/ws") as ws:
        await ws.receive_event()
        ws.send_text(json.dumps({"user": "a", "text": "one"}))
        one = await ws.receive_event()
    await app.state["rooms"].publish("r", Event.json({"text": "two"}, event="message"))
    async with open_websocket_app(
        app, f"/rooms/r/ws?lastEventId={one.last_event_id}"
    ) as ws:
        replayed = await ws.receive_event()
    assert json.loads(replayed.data) == {"text": "two"}


async def test_chat_ws_refuses_a_bad_room(chat_ws: Any) -> None:
    app = chat_ws.make_app()
    async with open_websocket_app(app, "/rooms/" + "x" * 41 + "/ws") as ws:
        pass
    assert not ws.accepted
    assert ws.close_code == 1008


async def test_websocket_source_raises_the_blocks_own_error() -> None:
    with pytest.raises(KeyError):
        async with open_websocket_source("ws://127.0.0.1:9/feed"):
            raise KeyError("not wrapped in an exception group")


def test_websocket_source_refuses_a_non_websocket_url() -> None:
    with pytest.raises(WebSocketSourceError, match="not a ws"):
        trio.run(_open_http_url)


async def _open_http_url() -> None:
    async with open_websocket_source("http://127.0.0.1:9/feed"):
        pass  # pragma: no cover


async def test_websocket_source_read_timeout_reconnects() -> None:
    server = WsServer(SseConfig(keep_alive=None))

    async def publish_on_second_connection() -> None:
        await server.joined.receive()
        await server.joined.receive()
        await server.bc.publish("feed", Event("back"))

    with trio.fail_after(10):
        async with (
            serve_app(server) as url,
            open_websocket_source(ws_url(url), timeout=0.2, retry=0.01) as source,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(publish_on_second_connection)
            event = await source.__anext__()
    # Silent (no keep-alive): dropped after 0.2 s and reconnected.
    assert event.data == "back"
    assert source.reconnects == 1
    assert isinstance(source.last_error, ReadTimeout)
    assert server.resumed == [None, None]
