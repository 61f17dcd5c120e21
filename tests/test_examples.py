"""The examples, driven in memory (the demo also over a real server)."""

from __future__ import annotations

import json
import re
import socket
import sys
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from trio_sse.testing import open_stream, request

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

FORM = {"content-type": "application/x-www-form-urlencoded"}


async def next_event(stream: Any, name: str | None = None) -> Any:
    """The next event (of type *name*, skipping others)."""
    async for event in stream:
        if name is None or event.type == name:
            return event
    raise AssertionError("the stream ended")


# -- every example --------------------------------------------------------------

NAMES = ["chat", "notifications", "health", "dashboard", "htmx"]


@pytest.mark.parametrize("name", NAMES)
async def test_index_page_is_served_and_works_offline(load: Any, name: str) -> None:
    app = load(name).make_app()
    response = await request(app, "GET", "/")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.body.decode()
    assert "<title>trio_sse" in page
    # No CDN: every script and stylesheet comes from this server.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    for path in re.findall(r"""src=["'](/static/[^"']+)""", page):
        assert (await request(app, "GET", path)).status == 200


@pytest.mark.parametrize("name", NAMES)
def test_module_app_is_importable_without_serving(load: Any, name: str) -> None:
    module = load(name)
    assert callable(module.app)
    assert callable(module.make_app)


async def test_router_answers_404_405_and_static(load: Any) -> None:
    app = load("chat").make_app()
    assert (await request(app, "GET", "/nowhere")).status == 404
    wrong = await request(app, "GET", "/rooms/lobby/messages")
    assert wrong.status == 405
    assert wrong.headers["allow"] == "POST"
    js = await request(app, "GET", "/static/htmx.min.js")
    assert js.status == 200
    assert "javascript" in js.headers["content-type"]
    assert (await request(app, "GET", "/static/..%2Fchat.py")).status == 404


# -- chat -----------------------------------------------------------------------


async def test_chat_room_receives_posted_messages(load: Any) -> None:
    app = load("chat").make_app()
    async with open_stream(app, "/rooms/lobby/events") as stream:
        assert stream.status == 200
        assert json.loads((await next_event(stream, "presence")).data) == {"online": 1}
        body = b"user=ann&text=hello+trio"
        posted = await request(app, "POST", "/rooms/lobby/messages", body, FORM)
        assert posted.status == 201
        event = await next_event(stream, "message")
        message = json.loads(event.data)
        assert (message["user"], message["text"]) == ("ann", "hello trio")
        assert event.last_event_id == posted.json()["id"]


async def test_chat_rooms_are_separate_and_presence_counts(load: Any) -> None:
    app = load("chat").make_app()
    async with open_stream(app, "/rooms/a/events") as a:
        await next_event(a, "presence")
        async with open_stream(app, "/rooms/b/events") as b:
            await next_event(b, "presence")
            async with open_stream(app, "/rooms/a/events") as a2:
                assert json.loads((await next_event(a2, "presence")).data) == {
                    "online": 2
                }
                assert json.loads((await next_event(a, "presence")).data) == {
                    "online": 2
                }
            # a2 left: the room is told.
            assert json.loads((await next_event(a, "presence")).data) == {"online": 1}
            await request(app, "POST", "/rooms/b/messages", b"user=x&text=only+b", FORM)
            assert json.loads((await next_event(b, "message")).data)["text"] == "only b"
        await request(app, "POST", "/rooms/a/messages", b"user=x&text=only+a", FORM)
        assert json.loads((await next_event(a, "message")).data)["text"] == "only a"


async def test_chat_presence_does_not_move_the_last_event_id(load: Any) -> None:
    """Presence updates carry no id: a reconnect resumes after the last message."""
    app = load("chat").make_app()
    async with open_stream(app, "/rooms/lobby/events") as stream:
        await next_event(stream, "presence")
        posted = await request(app, "POST", "/rooms/lobby/messages", b"text=a", FORM)
        message = await next_event(stream, "message")
        async with open_stream(app, "/rooms/lobby/events"):  # someone joins
            presence = await next_event(stream, "presence")
    assert presence.last_event_id == message.last_event_id == posted.json()["id"]


async def test_chat_reconnect_replays_missed_messages(load: Any) -> None:
    app = load("chat").make_app()
    async with open_stream(app, "/rooms/lobby/events") as stream:
        await request(app, "POST", "/rooms/lobby/messages", b"text=zero", FORM)
        first = await next_event(stream, "message")
    for text in ("one", "two"):
        await request(
            app, "POST", "/rooms/lobby/messages", f"text={text}".encode(), FORM
        )
    headers = {"last-event-id": first.last_event_id}
    async with open_stream(app, "/rooms/lobby/events", headers=headers) as stream:
        texts = [
            json.loads((await next_event(stream, "message")).data)["text"] for _ in "12"
        ]
    assert texts == ["one", "two"]


async def test_chat_rejects_empty_and_long_messages(load: Any) -> None:
    app = load("chat").make_app()
    path = "/rooms/lobby/messages"
    assert (await request(app, "POST", path, b"text=", FORM)).status == 400
    assert (await request(app, "POST", path, b"text=" + b"x" * 501, FORM)).status == 400
    too_long_room = "/rooms/" + "r" * 41 + "/messages"
    assert (await request(app, "POST", too_long_room, b"text=hi", FORM)).status == 400
    json_body = json.dumps({"user": "j", "text": "as json"}).encode()
    headers = {"content-type": "application/json"}
    assert (await request(app, "POST", path, json_body, headers)).status == 201


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"3", b"null", b"{"])
async def test_chat_json_body_that_is_not_an_object_is_400(
    load: Any, body: bytes
) -> None:
    app = load("chat").make_app()
    headers = {"content-type": "application/json"}
    answer = await request(app, "POST", "/rooms/lobby/messages", body, headers)
    assert answer.status == 400
    assert answer.body.startswith(b"bad request")


async def test_chat_first_load_starts_with_recent_messages(load: Any) -> None:
    app = load("chat").make_app()
    for text in ("one", "two", "three"):
        body = f"user=ann&text={text}".encode()
        assert (await request(app, "POST", "/rooms/r/messages", body, FORM)).status
    async with open_stream(app, "/rooms/r/events") as stream:
        events = [await next_event(stream, "message") for _ in range(3)]
        texts = [json.loads(event.data)["text"] for event in events]
        assert texts == ["one", "two", "three"]
        ids = [event.last_event_id for event in events]
        assert all(ids) and ids == sorted(ids, key=lambda i: int(i.split("-")[1]))
        # Then live messages, without a repeat.
        await request(app, "POST", "/rooms/r/messages", b"text=four", FORM)
        assert json.loads((await next_event(stream, "message")).data)["text"] == "four"


async def test_chat_forgets_a_room_a_minute_after_it_empties(
    load: Any, autojump_clock: Any
) -> None:
    chat = load("chat")
    app = chat.make_app()
    rooms, recent = app.state["rooms"], app.state["recent"]
    async with app.running():
        async with open_stream(app, "/rooms/gone/events") as stream:
            await request(app, "POST", "/rooms/gone/messages", b"text=hi", FORM)
            first = await next_event(stream, "message")
            await request(app, "POST", "/rooms/gone/messages", b"text=hi2", FORM)
        await request(app, "POST", "/rooms/only-posted/messages", b"text=x", FORM)
        async with (
            open_stream(app, "/rooms/kept/events") as kept,
            trio.open_nursery() as nursery,
        ):
            # A member that reads all along (keep-alive comments included).
            received: list[Any] = []

            async def read() -> None:
                async for event in kept:
                    received.append(event)

            nursery.start_soon(read)
            await trio.sleep(chat.FORGET_AFTER / 2)
            # Within the grace period a reconnect still replays.
            assert set(recent) == {"gone", "only-posted"}
            await trio.sleep(chat.FORGET_AFTER)
            assert recent == {}
            assert rooms.keys() == ["kept"]
            # History is gone too: a reconnect after 'hi' cannot replay 'hi2'.
            stream = rooms.subscribe("gone", last_event_id=first.last_event_id)
            async with stream:
                with trio.move_on_after(1):
                    replayed = await stream.receive()
                    raise AssertionError(f"replayed {replayed}")
            # The member of "kept" is still served.
            await request(app, "POST", "/rooms/kept/messages", b"text=still", FORM)
            await trio.testing.wait_all_tasks_blocked()
            assert json.loads(received[-1].data)["text"] == "still"
            nursery.cancel_scope.cancel()


async def test_chat_presence_churn_does_not_make_members_lag(
    load: Any, autojump_clock: Any
) -> None:
    """One client joining and leaving 2,000 times; 300 members never lag.

    The members do not read during the churn (slow networks): every
    presence update the churn causes must replace the previous one, not
    queue up in front of the members' messages.
    """
    app = load("chat").make_app()
    rooms = app.state["rooms"]
    path = "/rooms/busy/events"
    with trio.fail_after(120):
        async with AsyncExitStack() as stack:
            members = [
                await stack.enter_async_context(open_stream(app, path))
                for _ in range(300)
            ]
            for _ in range(2000):
                async with open_stream(app, path):
                    pass
            stats = rooms.stats()
            assert (stats.lagged, stats.missed) == (0, 0)
            assert rooms.subscriber_count("busy") == 300
            await request(app, "POST", "/rooms/busy/messages", b"text=hi", FORM)
            for member in members:
                # What waits for a member that did not read: what its
                # response's small write buffer (16) held before the churn,
                # then the newest update; never the 4,000 the churn caused.
                seen: list[Any] = []
                async for event in member:
                    seen.append(json.loads(event.data))
                    if {"online": 300} in seen and {"text": "hi"} in [
                        {"text": e.get("text")} for e in seen
                    ]:
                        break
                assert len(seen) <= 20, seen


# -- health -----------------------------------------------------------------------


async def test_health_channel_pushes_status_periodically(
    load: Any, autojump_clock: Any
) -> None:
    app = load("health").make_app(interval=2.0)
    async with open_stream(app, "/health/events") as stream:
        first = await next_event(stream, "status")
        start = trio.current_time()
        second = await next_event(stream, "status")
        assert trio.current_time() - start == pytest.approx(2.0)
    for event in (first, second):
        status = json.loads(event.data)
        assert status["checks"]["event_loop"] == "ok"
        assert status["watching"] == 1
    # The channel function was cancelled when the client left.
    assert (await request(app, "GET", "/health")).json()["watching"] == 0


# -- dashboard --------------------------------------------------------------------


async def test_dashboard_streams_history_then_samples(
    load: Any, autojump_clock: Any
) -> None:
    app = load("dashboard").make_app(interval=0.5)
    async with app.running():
        await trio.sleep(1.2)  # three samples taken before the page opens
        async with open_stream(app, "/metrics/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            history = await next_event(stream)
            assert history.type == "history"
            assert len(json.loads(history.data)) == 3
            opened = trio.current_time()
            sample_event = await next_event(stream)
            # A new dashboard triggers a sample at once, which counts it.
            assert trio.current_time() == opened
            assert sample_event.type == "metrics"
            assert sample_event.last_event_id
            sample = json.loads(sample_event.data)
            assert sample["clients"] == 1
            assert sample["rss_mb"] > 0
            assert sample["tasks"] > 1
            expected = {"t", "cpu", "rss_mb", "events_per_s", "load_subscribers"}
            assert expected <= set(sample)


async def test_dashboard_serves_prometheus_metrics(
    load: Any, autojump_clock: Any
) -> None:
    app = load("dashboard").make_app(interval=0.5)
    async with app.running():
        async with open_stream(app, "/metrics/events") as stream:
            await next_event(stream, "history")
            sample = json.loads((await next_event(stream, "metrics")).data)
            assert sample["streams_open"] == 1
            shown = {"streams_open", "events_written", "bytes_written", "lag_skips"}
            assert shown | {"uptime_s", "pid"} <= set(sample)
            scrape = await request(app, "GET", "/metrics")
            assert scrape.status == 200
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(scrape.body.decode())
                for s in family.samples
            }
            sse = (("transport", "sse"),)
            assert samples["trio_sse_streams_open", sse] == 1
            assert samples["trio_sse_events_written_total", sse] >= 2
            assert samples["trio_sse_written_bytes_total", sse] >= len(stream.raw)
            key = (("broadcaster", "dashboards"), ("key", "metrics"))
            assert samples["trio_sse_broadcast_subscribers", key] == 1
        scrape = await request(app, "GET", "/metrics")
        assert 'trio_sse_streams_open{transport="sse"} 0.0' in scrape.text


async def test_dashboard_load_button_adds_subscribers(
    load: Any, autojump_clock: Any
) -> None:
    module = load("dashboard")
    app = module.make_app(interval=0.5, tick_rate=20.0)
    async with app.running():
        await trio.sleep(0.1)
        added = await request(app, "POST", "/load", b"n=25", FORM)
        assert added.json() == {"added": 25, "seconds": module.LOAD_SECONDS}
        async with open_stream(app, "/metrics/events") as stream:
            await next_event(stream, "history")
            await next_event(stream, "metrics")  # counts the ticks since the last one
            sample = json.loads((await next_event(stream, "metrics")).data)
        assert sample["load_subscribers"] == 25
        # 25 subscribers x 20 ticks/s, plus the samples themselves.
        assert 450 <= sample["events_per_s"] <= 560
        assert (await request(app, "POST", "/load", b"n=lots", FORM)).status == 400
        await trio.sleep(module.LOAD_SECONDS + 1)
        assert app.state["dashboard"].ticks.subscriber_count("ticks") == 0


async def test_dashboard_over_a_real_server(
    load: Any, open_server: Any, open_http: Any
) -> None:
    app = load("dashboard").make_app(interval=0.05)
    async with app.running(), open_server(app) as url:
        async with open_http(url, "/") as page:
            with trio.fail_after(10):
                await page.read_to_end()
            assert page.status == 200 and b"EventSource" in page.body
        async with open_http(url, "/metrics/events") as http:
            with trio.fail_after(10):
                assert await http.receive_response() == 200
                while len([e for e in http.events() if e.type == "metrics"]) < 2:
                    await http.receive_some()
        assert http.headers["content-type"].startswith("text/event-stream")
        samples = [json.loads(e.data) for e in http.events() if e.type == "metrics"]
        assert samples[0]["clients"] == 1
        assert samples[1]["t"] >= samples[0]["t"]


def test_dashboard_listens_on_127_0_0_1_8000_by_default(
    load: Any, monkeypatch: Any
) -> None:
    """``python examples/dashboard.py`` serves http://127.0.0.1:8000 and says so."""
    module = load("dashboard")
    seen: dict[str, Any] = {}

    async def fake_serve(app: Any, host: str, port: int, *, task_status: Any) -> None:
        seen.update(host=host, port=port)
        task_status.started([f"http://{host}:{port}"])

    monkeypatch.setattr(sys, "argv", ["dashboard.py"])
    monkeypatch.setattr(sys.modules["_router"].trio_sse, "serve", fake_serve)
    module.run(module.app, "trio_sse dashboard")
    assert seen == {"host": "127.0.0.1", "port": 8000}


# -- htmx ---------------------------------------------------------------------------


async def test_htmx_clock_and_shouts_are_html_fragments(
    load: Any, autojump_clock: Any
) -> None:
    app = load("htmx").make_app(tick=1.0)
    async with open_stream(app, "/events") as stream:
        clock = await next_event(stream, "clock")
        assert clock.data.startswith("<time>") and "1 page open" in clock.data
        body = b"name=<b>eve</b>&text=hi+<script>"
        assert (await request(app, "POST", "/shout", body, FORM)).status == 204
        shout = await next_event(stream, "message")
        assert shout.data.startswith(
            "<li><b>&lt;b&gt;eve&lt;/b&gt;</b> hi &lt;script&gt;"
        )
        start = trio.current_time()
        await next_event(stream, "clock")
        assert trio.current_time() - start == pytest.approx(1.0)


def test_a_busy_port_is_one_line_with_the_fix(
    load: Any, monkeypatch: Any, capsys: Any
) -> None:
    module = load("dashboard")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(sys, "argv", ["dashboard.py", "--port", str(port)])
        with pytest.raises(SystemExit) as info:
            module.run(module.app, "trio_sse dashboard")
    assert info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"error: 127.0.0.1:{port} is already in use (another server, or another "
        f"example?): run with --port {port + 1}, or any free port\n"
    )


def test_ctrl_c_is_a_quiet_stop(load: Any, monkeypatch: Any, capsys: Any) -> None:
    """Ctrl+C arrives wrapped in exception groups; ``run()`` says "stopped"."""
    module = load("dashboard")

    async def interrupted_serve(
        app: Any, host: str, port: int, *, task_status: Any
    ) -> None:
        task_status.started([f"http://{host}:{port}"])
        raise KeyboardInterrupt

    monkeypatch.setattr(sys, "argv", ["dashboard.py", "--port", "0"])
    monkeypatch.setattr(sys.modules["_router"].trio_sse, "serve", interrupted_serve)
    module.run(module.app, "trio_sse dashboard")
    assert capsys.readouterr().out.splitlines() == [
        "trio_sse dashboard: open http://127.0.0.1:0/ (Ctrl+C to stop)",
        "stopped",
    ]
    router = sys.modules["_router"]
    assert not router._interrupted(
        BaseExceptionGroup("x", [KeyboardInterrupt(), ValueError()])
    )
