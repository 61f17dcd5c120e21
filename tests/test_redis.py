"""RedisBackend against a real redis-server (started by the ``redis_server`` fixture).

Two broadcasters on two coredis clients stand in for two processes; the
last tests run two real server processes sharing one Redis. Without the
``redis-server`` binary these tests skip, except under ``CI=true``.
"""

from __future__ import annotations

import datetime
import gc
import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import coredis
import httpx
import pytest
import trio
import trio.testing
from helpers import RedisCluster, RedisServer, free_port, open_failover_proxy
from trio import Process

from trio_sse import Broadcaster, Event, MessageEvent, SseError
from trio_sse.client import open_event_source
from trio_sse.redis import RedisBackend, RedisUnavailable

pytestmark = pytest.mark.redis

LIMIT = 20  # seconds: every test finishes well within this


@asynccontextmanager
async def open_broadcaster(
    url: str, **backend_kwargs: Any
) -> AsyncIterator[Broadcaster[str, Any]]:
    """A Broadcaster on its own coredis client (one "process")."""
    client: coredis.Redis[Any] = coredis.Redis.from_url(url)
    backend: RedisBackend[str, Any] = RedisBackend(client, **backend_kwargs)
    async with client, Broadcaster(backend=backend) as bc:
        yield bc


def backend_of(bc: Broadcaster[str, Any]) -> RedisBackend[str, Any]:
    backend = bc.backend
    assert isinstance(backend, RedisBackend)
    return backend


async def take(stream: AsyncIterator[Any], n: int) -> list[Any]:
    return [await stream.__anext__() for _ in range(n)]


async def test_two_broadcasters_exchange_per_key(redis_server: RedisServer) -> None:
    with trio.fail_after(LIMIT):
        async with (
            open_broadcaster(redis_server.url) as one,
            open_broadcaster(redis_server.url) as two,
        ):
            async with (
                one.subscribe("a") as a1,
                two.subscribe("a") as a2,
                two.subscribe("b") as b2,
            ):
                # Subscribed before these publishes: nothing is missed, even
                # though the readers may not have issued their XREAD yet.
                id1 = await one.publish("a", {"n": 1})
                await two.publish("b", "only b")
                id2 = await two.publish("a", {"n": 2})
                assert await take(a1, 2) == [{"n": 1}, {"n": 2}]
                assert await take(a2, 2) == [{"n": 1}, {"n": 2}]
                assert (a1.last_id, a2.last_id) == (id2, id2)
                assert await b2.__anext__() == "only b"
                assert one.subscriber_count("b") == 0
                assert backend_of(one).reading == {"a"}
                assert backend_of(two).reading == {"a", "b"}
            # Redis Stream ids, strictly increasing.
            assert id1.split("-")[0].isdigit()
            assert tuple(map(int, id1.split("-"))) < tuple(map(int, id2.split("-")))


async def test_replay_across_processes_while_publishing(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(LIMIT):
        async with (
            open_broadcaster(redis_server.url) as one,
            open_broadcaster(redis_server.url) as two,
        ):
            ids = [await two.publish("r", n) for n in range(30)]
            halfway = trio.Event()

            async def publish_more() -> None:
                for n in range(30, 60):
                    await two.publish("r", n)
                    if n == 35:
                        halfway.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_more)
                await halfway.wait()
                # Entries 10..35 are in the stream, more arrive meanwhile.
                async with one.subscribe("r", last_event_id=ids[9]) as stream:
                    assert stream.replay_complete
                    got = await take(stream, 50)
            assert got == list(range(10, 60))


async def test_replay_incomplete_for_malformed_or_trimmed_ids(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(LIMIT):
        async with open_broadcaster(redis_server.url, maxlen=4) as bc:
            client = backend_of(bc).client
            # Small stream nodes, so approximate trimming bites at once.
            await client.config_set({"stream-node-max-entries": 4})
            ids = [await bc.publish("t", n) for n in range(30)]
            assert await client.xlen(backend_of(bc).stream_name("t")) < 30
            for stale in ("nonsense", ids[0], "1-0", "99999999999999-0"):
                async with bc.subscribe("t", last_event_id=stale) as stream:
                    assert not stream.replay_complete
                    await bc.publish("t", "live")
                    assert await stream.__anext__() == "live"
            async with bc.subscribe("t", last_event_id=ids[-2]) as stream:
                assert stream.replay_complete
                assert await stream.__anext__() == 29


async def test_event_round_trip_encoded_once(redis_server: RedisServer) -> None:
    events = [
        Event("plain"),
        Event("two\nlines", event="poem", id="own-id"),
        Event.json({"ü": [1, 2]}, retry=1.5),
        Event("td", retry=datetime.timedelta(seconds=3, microseconds=250_000)),
        Event(None, comment="just a comment", retry=2),
        Event(""),
    ]
    with trio.fail_after(LIMIT):
        async with (
            open_broadcaster(redis_server.url) as one,
            open_broadcaster(redis_server.url) as two,
        ):
            async with one.subscribe("e") as s1, one.subscribe("e") as s2:
                ids = [await two.publish("e", event) for event in events]
                got1 = await take(s1, len(events))
                got2 = await take(s2, len(events))
            expected = [
                e if e.id is not None else e.with_id(i)
                for e, i in zip(events, ids, strict=True)
            ]
            assert got1 == expected
            assert [type(e.retry) for e in got1] == [type(e.retry) for e in events]
            # One Event object per entry and process: encoded once.
            assert all(a is b for a, b in zip(got1, got2, strict=True))
            async with one.subscribe("e", last_event_id=ids[0]) as replayed:
                assert await take(replayed, len(events) - 1) == expected[1:]


async def test_undecodable_entries_are_logged_and_skipped(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_sse.redis")
    with trio.fail_after(LIMIT):
        async with open_broadcaster(redis_server.url) as bc:
            backend = backend_of(bc)
            name = backend.stream_name("bad")
            first = await bc.publish("bad", "first")
            async with bc.subscribe("bad") as stream:
                for fields in ({"v": "{not json"}, {"e": "[1]"}, {"x": "1"}):
                    await backend.client.xadd(name, fields)
                await bc.publish("bad", "good")
                assert await stream.__anext__() == "good"
            async with bc.subscribe("bad", last_event_id=first) as replayed:
                assert replayed.replay_complete
                assert await replayed.__anext__() == "good"
    warnings = [r for r in caplog.records if r.name == "trio_sse.redis"]
    # Three bad entries, skipped live and again on replay.
    assert len(warnings) == 6
    assert all(r.levelno == logging.WARNING for r in warnings)
    assert "cannot be decoded" in warnings[0].getMessage()


async def test_churn_frees_keys_and_new_keys_need_no_restart(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(LIMIT):
        async with (
            open_broadcaster(redis_server.url) as one,
            open_broadcaster(redis_server.url) as two,
        ):
            backend = backend_of(one)
            async with one.subscribe("stay") as stay:
                await trio.testing.wait_all_tasks_blocked()
                for i in range(100):
                    async with one.subscribe(f"k{i % 7}"):
                        assert f"k{i % 7}" in backend.reading
                assert backend.reading == {"stay"}
                # A key subscribed while the reader blocks on "stay" is read
                # at once: the blocking XREAD is interrupted.
                async with one.subscribe("late") as late:
                    await trio.testing.wait_all_tasks_blocked()
                    await two.publish("late", "hello")
                    assert await late.__anext__() == "hello"
                assert backend.reading == {"stay"}
                await two.publish("stay", "still here")
                assert await stay.__anext__() == "still here"


async def test_idle_subscribers_do_not_poll(redis_server: RedisServer) -> None:
    with trio.fail_after(LIMIT):
        async with open_broadcaster(redis_server.url) as bc:
            client = backend_of(bc).client
            async with bc.subscribe("idle") as stream:
                await bc.publish("idle", 1)
                assert await stream.__anext__() == 1
                before = (await client.info("commandstats"))["cmdstat_xread"]
                await trio.sleep(0.5)  # idle: the reader must send nothing
                after = (await client.info("commandstats"))["cmdstat_xread"]
                assert after["calls"] == before["calls"]


async def test_used_outside_async_with(redis_server: RedisServer) -> None:
    client: coredis.Redis[Any] = coredis.Redis.from_url(redis_server.url)
    async with client:
        bc: Broadcaster[str, Any] = Broadcaster(backend=RedisBackend(client))
        with pytest.raises(RuntimeError, match="async with Broadcaster"):
            await bc.publish("k", 1)
        with pytest.raises(SseError, match=r"await broadcaster\.publish"):
            bc.send("k", 1)
        with pytest.raises(RuntimeError, match="async with Broadcaster"):
            bc.subscribe("k")


# coredis (6.9) leaves the memory streams of a connection that failed to
# connect unclosed; collect them here rather than in a later test.
@pytest.fixture(autouse=True)
def _collect_coredis_leaks() -> Iterator[None]:
    """Collect what coredis leaves unclosed here, not in a later test.

    coredis 6.9 drops anyio memory streams unclosed when a connection fails;
    their ResourceWarning would otherwise surface in whatever test the
    garbage collector happens to run in.
    """
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


COREDIS_LEAKS = pytest.mark.filterwarnings(
    "ignore:Unclosed <MemoryObject:ResourceWarning",
    "ignore:Exception ignored in. <function MemoryObject"
    ":pytest.PytestUnraisableExceptionWarning",
)


@COREDIS_LEAKS
async def test_redis_restart_loses_and_duplicates_nothing(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(LIMIT):
        async with (
            open_broadcaster(redis_server.url, max_backoff=0.5) as one,
            open_broadcaster(redis_server.url, timeout=2) as two,
            one.subscribe("k") as stream,
        ):
            for n in range(10):
                await two.publish("k", n)
            assert await take(stream, 10) == list(range(10))
            redis_server.kill()
            start = trio.current_time()
            with pytest.raises(RedisUnavailable, match="cannot publish"):
                await two.publish("k", "lost")
            assert trio.current_time() - start < 3
            redis_server.start()
            for n in range(10, 20):
                await two.publish("k", n)
            assert await take(stream, 10) == list(range(10, 20))
            await two.publish("k", "end")
            assert await stream.__anext__() == "end"
            assert backend_of(one).connected
    gc.collect()


@COREDIS_LEAKS
async def test_dropped_connection_with_redis_up_loses_nothing(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(LIMIT):
        async with (
            open_broadcaster(redis_server.url) as one,
            open_broadcaster(redis_server.url) as two,
            one.subscribe("d") as stream,
        ):
            client = backend_of(two).client
            got: list[Any] = []
            for n in range(40):
                await two.publish("d", n)
                if n % 10 == 5:
                    # Drop every connection but this one (the reader's too).
                    await client.client_kill(
                        type_=coredis.PureToken.NORMAL, skipme=True
                    )
                if n % 3 == 0:
                    got += await take(stream, n + 1 - len(got))
            got += await take(stream, 40 - len(got))
            assert got == list(range(40))
            await two.publish("d", "end")
            assert await stream.__anext__() == "end"
    gc.collect()


# -- real server processes sharing one Redis ------------------------------------

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def open_chat_process(redis_url: str) -> AsyncIterator[tuple[int, Process]]:
    """``examples.redis_chat`` under Hypercorn's trio worker, in its own process."""
    port = free_port()
    args = [
        sys.executable, "-m", "hypercorn", "--worker-class", "trio",
        # No worker subprocess: killing this process kills the server.
        "--workers", "0",
        "--bind", f"127.0.0.1:{port}", "examples.redis_chat:app",
    ]  # fmt: skip
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    process = await trio.lowlevel.open_process(
        args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    ready = trio.Event()
    output = bytearray()

    async def drain(pipe: trio.abc.ReceiveStream) -> None:
        async for chunk in pipe:
            output.extend(chunk)
            if b"Running on" in output:
                ready.set()
        if not ready.is_set():
            raise RuntimeError(f"server process ended:\n{output.decode()}")

    try:
        async with trio.open_nursery() as nursery:
            assert process.stderr is not None
            nursery.start_soon(drain, process.stderr)
            with trio.fail_after(30):  # a busy machine starts Python slowly
                await ready.wait()
            try:
                yield port, process
            finally:
                nursery.cancel_scope.cancel()
    finally:
        process.kill()
        await process.wait()


async def post(http: httpx.AsyncClient, port: int, room: str, text: str) -> str:
    reply = await http.post(
        f"http://127.0.0.1:{port}/rooms/{room}/messages", data={"text": text}
    )
    assert reply.status_code == 201, reply.text
    event_id: str = reply.json()["id"]
    return event_id


async def test_two_server_processes_and_failover(redis_server: RedisServer) -> None:
    texts = [f"m{n}" for n in range(1, 7)]
    used: list[int] = []
    with trio.fail_after(90):
        async with (
            open_chat_process(redis_server.url) as (port1, process1),
            open_chat_process(redis_server.url) as (port2, _),
            open_failover_proxy([port1, port2], used) as proxy,
            httpx.AsyncClient() as http,
        ):
            # Clients resume after m0: whenever their subscription starts,
            # they get everything after it.
            start = await post(http, port1, "r", "m0")
            seen: dict[str, list[MessageEvent]] = {"direct": [], "proxied": []}
            three = trio.Event()

            async def read(name: str, url: str) -> None:
                async with open_event_source(
                    url + "/rooms/r/events", last_event_id=start, retry=0.1
                ) as source:
                    async for event in source:
                        seen[name].append(event)
                        if name == "proxied" and len(seen[name]) == 3:
                            three.set()
                        if len(seen[name]) == len(texts):
                            return

            async with trio.open_nursery() as nursery:
                # One client on process 2, one through the proxy on process 1.
                nursery.start_soon(read, "direct", f"http://127.0.0.1:{port2}")
                nursery.start_soon(read, "proxied", proxy)
                for n, text in enumerate(texts[:3]):
                    await post(http, (port1, port2)[n % 2], "r", text)
                await three.wait()
                process1.kill()  # the proxied client's server dies
                for text in texts[3:]:
                    await post(http, port2, "r", text)
    for events in seen.values():
        assert [json.loads(e.data)["text"] for e in events] == texts
        ids = [tuple(map(int, e.last_event_id.split("-"))) for e in events]
        assert ids == sorted(set(ids))
    assert seen["direct"][-1].last_event_id == seen["proxied"][-1].last_event_id
    # The proxied client was served by process 1, then by process 2.
    assert used[0] == port1 and used[-1] == port2


async def test_decoding_client_and_custom_codec(redis_server: RedisServer) -> None:
    client: coredis.Redis[Any] = coredis.Redis.from_url(
        redis_server.url, decode_responses=True
    )
    backend: RedisBackend[str, Any] = RedisBackend(client, prefix="app:", codec=json)
    async with client, Broadcaster(backend=backend) as bc:
        with trio.fail_after(LIMIT):
            first = await bc.publish("k", [1])
            async with bc.subscribe("k", last_event_id=first) as stream:
                await bc.publish("k", {"two": 2})
                await bc.publish("k", Event("three"))
                two, three = await take(stream, 2)
                assert two == {"two": 2}
                assert three == Event("three", id=stream.last_id)
            assert await client.xlen("app:k") == 3


@COREDIS_LEAKS
async def test_cluster_exchange_and_replay(redis_cluster: RedisCluster) -> None:
    port = redis_cluster.ports[0]

    @asynccontextmanager
    async def open_cluster_broadcaster() -> AsyncIterator[Broadcaster[str, Any]]:
        client: coredis.RedisCluster[Any] = coredis.RedisCluster("127.0.0.1", port)
        backend: RedisBackend[str, Any] = RedisBackend(client)
        async with client, Broadcaster(backend=backend) as bc:
            yield bc

    async def exchange() -> None:
        keys = [f"room{n}" for n in range(6)]  # spread over the nodes' slots
        with trio.fail_after(LIMIT):
            async with (
                open_cluster_broadcaster() as one,
                open_cluster_broadcaster() as two,
            ):
                names = {backend_of(one).stream_name(k) for k in keys}
                assert len({backend_of(one)._slot(n) for n in names}) == len(keys)
                firsts = {key: await two.publish(key, f"{key}:0") for key in keys}
                async with AsyncExitStack() as stack:
                    streams = {
                        key: await stack.enter_async_context(
                            one.subscribe(key, last_event_id=firsts[key])
                        )
                        for key in keys
                    }
                    for n in (1, 2):
                        for key in keys:
                            await two.publish(key, f"{key}:{n}")
                    for key, stream in streams.items():
                        assert stream.replay_complete
                        assert await take(stream, 2) == [f"{key}:1", f"{key}:2"]
                    # A key subscribed later is read at once, in its own slot.
                    async with one.subscribe("late") as late:
                        await two.publish("late", "hi")
                        assert await late.__anext__() == "hi"

    await exchange()
    # Only now are the clients unreachable: collect what coredis left open.
    gc.collect()
