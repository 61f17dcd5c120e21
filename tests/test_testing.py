"""The in-memory test client: trio_sse.testing.open_stream() and request()."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from trio_sse import Event, SseConfig, SseResponse
from trio_sse.testing import EventStream, Response, open_stream, request

Message = dict[str, Any]


def capture_scope(seen: list[Message]) -> Any:
    """An app that records its scope and answers 204."""

    async def app(scope: Message, receive: Any, send: Any) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


async def endless() -> AsyncIterator[Event]:
    i = 0
    while True:
        yield Event(f"e{i}")
        i += 1
        await trio.sleep(1)


# --- scope ----------------------------------------------------------------------


async def test_scope_is_a_realistic_asgi3_http_scope() -> None:
    seen: list[Message] = []
    await request(
        capture_scope(seen),
        "get",
        "/a%20b/c?x=1&lastEventId=7",
        headers={"Last-Event-ID": "3", "X-Y": "z"},
    )
    (scope,) = seen
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/a b/c"
    assert scope["raw_path"] == b"/a%20b/c"
    assert scope["query_string"] == b"x=1&lastEventId=7"
    assert scope["root_path"] == ""
    assert scope["headers"] == [
        (b"host", b"testserver"),
        (b"last-event-id", b"3"),
        (b"x-y", b"z"),
    ]
    assert scope["client"] == ("127.0.0.1", 50000)
    assert scope["server"] == ("testserver", 80)


async def test_scope_headers_as_pairs_keep_given_host() -> None:
    seen: list[Message] = []
    await request(
        capture_scope(seen), "GET", "/", headers=[(b"Host", b"example"), ("a", "1")]
    )
    assert seen[0]["headers"] == [(b"host", b"example"), (b"a", b"1")]
    assert seen[0]["query_string"] == b""


async def test_open_stream_scope_method_and_http_version() -> None:
    seen: list[Message] = []
    async with open_stream(
        capture_scope(seen), "/s", method="post", http_version="2"
    ) as s:
        assert s.status == 204
    assert seen[0]["method"] == "POST"
    assert seen[0]["http_version"] == "2"


async def test_path_must_start_with_slash() -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        await request(capture_scope([]), "GET", "events")


# --- open_stream ------------------------------------------------------------------


async def test_stream_exposes_status_headers_events_comments_chunks() -> None:
    response = SseResponse(endless(), headers={"X-A": "1"})
    async with open_stream(response, "/") as s:
        assert isinstance(s, EventStream)
        assert s.status == 200
        assert s.headers["x-a"] == "1"
        first = await s.__anext__()
        assert first.data == "e0"
        assert first.type == "message"
        assert s.comments == [""]
        assert s.raw.startswith(b":\ndata: e0\n\n")
        assert s.events == [first]
        assert s.last_event_id == ""
        assert not s.complete


async def test_endless_stream_does_not_hang_on_exit(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_stream(SseResponse(endless()), "/") as s:
        got = []
        async for event in s:
            got.append(event.data)
            if len(got) == 3:
                break
    assert got == ["e0", "e1", "e2"]
    assert s.complete  # the response sent its final message on disconnect
    assert s.disconnected


async def test_leaving_without_reading_anything() -> None:
    async with open_stream(SseResponse(endless()), "/") as s:
        pass
    assert s.complete


async def test_disconnect_then_aclose_waits_for_app() -> None:
    finished = trio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        assert (await receive())["type"] == "http.request"
        assert (await receive())["type"] == "http.disconnect"
        await send({"type": "http.response.body", "body": b"bye"})
        finished.set()

    async with open_stream(app, "/") as s:
        s.disconnect()
        await s.aclose()
        assert finished.is_set()
        assert s.chunks == [b"bye"]
        assert s.complete


async def test_request_body_is_delivered() -> None:
    got: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        got.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async with open_stream(app, "/", method="POST", body=b"hello"):
        pass
    assert got == [{"type": "http.request", "body": b"hello", "more_body": False}]


async def test_send_completes_only_when_read() -> None:
    progress: list[int] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            progress.append(i)

    async with open_stream(app, "/") as s:
        await trio.testing.wait_all_tasks_blocked()
        assert progress == []
        await s.receive_chunk()
        await trio.testing.wait_all_tasks_blocked()
        assert progress == [0]
    assert progress == [0, 1, 2]


async def test_receive_chunk_end_of_channel_when_app_returns() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})

    async with open_stream(app, "/") as s:
        assert await s.receive_chunk() == b"a"
        with pytest.raises(trio.EndOfChannel):
            await s.receive_chunk()
        assert not s.complete


async def test_final_body_chunk_is_returned_then_end() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: z\n\n"})

    async with open_stream(app, "/") as s:
        assert [e.data async for e in s] == ["z"]
        assert s.complete


async def test_parser_state_is_exposed() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        body = b": hello\nretry: 1500\nid: 9\ndata: d\n\n"
        await send({"type": "http.response.body", "body": body})

    async with open_stream(app, "/") as s:
        [event] = [e async for e in s]
        assert event.last_event_id == "9"
        assert s.last_event_id == "9"
        assert s.retry == 1500
        assert s.comments == ["hello"]


async def test_repeated_response_headers_are_joined() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        headers = [(b"Vary", b"a"), (b"vary", b"b")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async with open_stream(app, "/") as s:
        assert s.headers == {"vary": "a, b"}


# --- errors -----------------------------------------------------------------------


async def test_app_error_before_start_is_raised_bare() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        raise LookupError("no route")

    with pytest.raises(LookupError, match="no route"):
        async with open_stream(app, "/"):
            pass  # pragma: no cover


async def test_app_returning_without_response() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        return

    with pytest.raises(RuntimeError, match="without starting a response"):
        async with open_stream(app, "/"):
            pass  # pragma: no cover
    with pytest.raises(RuntimeError, match="without starting a response"):
        await request(app, "GET", "/")


async def test_app_error_mid_stream_is_raised_on_exit() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise KeyError("mid")

    with pytest.raises(KeyError, match="mid"):
        async with open_stream(app, "/") as s:
            assert [e async for e in s] == []


async def test_error_in_block_propagates_bare_and_cancels_app() -> None:
    cancelled = trio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await trio.sleep_forever()  # ignores disconnects
        finally:
            cancelled.set()

    with pytest.raises(ZeroDivisionError):
        async with open_stream(app, "/"):
            1 / 0  # noqa: B018
    assert cancelled.is_set()


@pytest.mark.parametrize(
    "messages",
    [
        [{"type": "http.response.body", "body": b""}],
        [
            {"type": "http.response.start", "status": 200},
            {"type": "http.response.start", "status": 200},
        ],
        [
            {"type": "http.response.start", "status": 200},
            {"type": "http.response.body", "body": b""},
            {"type": "http.response.body", "body": b""},
        ],
        [{"type": "websocket.send"}],
    ],
)
async def test_protocol_violations_raise(messages: list[Message]) -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    with pytest.raises(RuntimeError):
        await request(app, "GET", "/")


# --- request() ----------------------------------------------------------------------


async def test_request_returns_status_headers_body() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        message = await receive()
        payload = json.dumps({"got": message["body"].decode()}).encode()
        headers = [(b"Content-Type", b"application/json")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send(
            {"type": "http.response.body", "body": payload[:5], "more_body": True}
        )
        await send({"type": "http.response.body", "body": payload[5:]})

    response = await request(app, "POST", "/publish", body=b"hi")
    assert isinstance(response, Response)
    assert response.status == 201
    assert response.headers == {"content-type": "application/json"}
    assert response.body == b'{"got": "hi"}'
    assert response.text == '{"got": "hi"}'
    assert response.json() == {"got": "hi"}


async def test_request_receive_disconnects_after_response() -> None:
    seen: list[str] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        seen.append((await receive())["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        seen.append((await receive())["type"])

    response = await request(app, "GET", "/")
    assert response.body == b"ok"
    assert seen == ["http.request", "http.disconnect"]


async def test_request_app_error_propagates() -> None:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        raise OSError("down")

    with pytest.raises(OSError, match="down"):
        await request(app, "GET", "/")


# --- frameworks -----------------------------------------------------------------------


async def test_starlette_endpoint_returning_sse_response(
    autojump_clock: trio.abc.Clock,
) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from trio_sse import last_event_id

    async def events(request: Request) -> SseResponse:
        start = int(last_event_id(request) or "0")

        async def gen() -> AsyncIterator[Event]:
            for i in range(start + 1, start + 4):
                yield Event(f"n{i}", id=str(i))
                await trio.sleep(1)

        return SseResponse(gen(), config=SseConfig(keep_alive=None))

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/events", events), Route("/health", health)])
    headers = {"Last-Event-ID": "5"}
    async with open_stream(app, "/events", headers=headers) as s:
        got = [(e.data, e.last_event_id) async for e in s]
    assert got == [("n6", "6"), ("n7", "7"), ("n8", "8")]
    assert s.headers["content-type"] == "text/event-stream; charset=utf-8"
    response = await request(app, "GET", "/health")
    assert (response.status, response.text) == (200, "ok")


async def test_open_stream_shutdown_event_reaches_the_scope() -> None:
    shutdown = trio.Event()
    seen: list[Message] = []
    async with open_stream(capture_scope(seen), "/", shutdown=shutdown):
        pass
    assert seen[0]["trio_sse.shutdown"] is shutdown


async def test_open_stream_simulated_shutdown_ends_a_response(
    autojump_clock: trio.abc.Clock,
) -> None:
    shutdown = trio.Event()
    config = SseConfig(shutdown_retry=3)
    response = SseResponse(endless(), config=config)
    async with open_stream(response, "/", shutdown=shutdown) as s:
        assert (await s.__anext__()).data == "e0"
        shutdown.set()
        assert [e.data async for e in s] == []
        assert s.complete
        assert s.retry == 3000
