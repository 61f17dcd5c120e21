"""examples/notifications.py: the authentication pattern, tried as an attacker.

The stream route checks a JWT (cookie, ``Authorization: Bearer`` or
``?access_token=``) before it subscribes; a missing, forged, tampered or
expired token gets 401 and another user's token 403, with no byte of the
stream, live or replayed. Ids count each user's own notifications, the
stream ends when the token expires, and every POST checks ``Origin``. The
attacks run over a real Hypercorn server on 127.0.0.1; the page's own flow
runs in memory.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
import trio
import trio.testing
from helpers import HttpStream

from trio_sse.testing import open_stream, request

SECRET = secrets.token_bytes(32)
PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
ORIGIN = "http://testserver"  # the in-memory client's host
SECRET_TEXT = "reset code 4711"


def make_app(load: Any, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "demo_interval": None,
        "secret": SECRET,
        "passwords": PASSWORDS,
    }
    return load("notifications").make_app(**(options | kwargs))


def token(sub: str, *, key: bytes = SECRET, seconds: float = 600, **claims: Any) -> str:
    payload = {"sub": sub, "exp": int(time.time() + seconds), **claims}
    return jwt.encode(payload, key, algorithm="HS256")


def tampered() -> str:
    """Bob's valid token with its payload rewritten to say alice."""
    header, _, signature = token("bob").split(".")
    payload = json.dumps({"sub": "alice", "exp": int(time.time()) + 600})
    return ".".join(
        [header, jwt.utils.base64url_encode(payload.encode()).decode(), signature]
    )


def unsigned() -> str:
    """A token with ``alg: none`` (no signature at all)."""
    return jwt.encode(
        {"sub": "alice", "exp": int(time.time()) + 600}, None, algorithm="none"
    )


def credentials(place: str, value: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Request headers and query parameters carrying ``value`` in ``place``."""
    if place == "cookie":
        return [("cookie", f"token={value}")], {}
    if place == "bearer":
        return [("authorization", f"Bearer {value}")], {}
    return [], {"access_token": value}


def path_with(path: str, query: dict[str, str]) -> str:
    return f"{path}?{urlencode(query)}" if query else path


async def next_event(stream: Any, name: str | None = None) -> Any:
    async for event in stream:
        if name is None or event.type == name:
            return event
    raise AssertionError("the stream ended")


async def read_events(
    http: HttpStream, count: int, name: str = "notification"
) -> list[Any]:
    while len([e for e in http.events() if e.type == name]) < count:
        await http.receive_some()
    return [e for e in http.events() if e.type == name][:count]


def epoch_of(event_id: str) -> str:
    return event_id.split("-")[0]


# -- over a real server: what an attacker gets -----------------------------------


BAD_TOKENS = {
    "forged": lambda: token("alice", key=secrets.token_bytes(32)),
    "tampered": tampered,
    "unsigned": unsigned,
    "expired": lambda: token("alice", seconds=-1),
    "garbage": lambda: "not.a.jwt",
    "bob's": lambda: token("bob"),
}


async def test_refused_tokens_get_no_byte_of_alices_stream(
    load: Any, open_server: Any, open_http: Any
) -> None:
    app = make_app(load)
    users = app.state["users"]
    first = await users.publish(
        "alice", load("notifications").notification("note", "hi")
    )
    await users.publish(
        "alice", load("notifications").notification("note", SECRET_TEXT)
    )
    replays: dict[str, tuple[list[tuple[str, str]], dict[str, str]]] = {
        "live": ([], {}),
        "lastEventId": ([], {"lastEventId": f"{epoch_of(first)}-0"}),
        "Last-Event-ID": ([("last-event-id", first)], {}),
    }
    refused = 0
    own = path_with("/users/alice/events", {"lastEventId": f"{epoch_of(first)}-0"})
    alice_cookie = [("cookie", f"token={token('alice')}")]
    async with (
        open_server(app) as url,
        open_http(url, own, headers=alice_cookie) as alice,
    ):
        # Alice herself is served all along (replay, then live).
        assert await alice.receive_response() == 200
        for mode, (replay_headers, replay_query) in replays.items():
            attempts: list[tuple[str, list[tuple[str, str]], dict[str, str]]] = [
                ("missing", [], {})
            ]
            for kind, make in BAD_TOKENS.items():
                for place in ("cookie", "bearer", "query"):
                    headers, query = credentials(place, make())
                    attempts.append((f"{kind} in {place}", headers, query))
            for what, headers, query in attempts:
                path = path_with("/users/alice/events", query | replay_query)
                expected = 403 if what.startswith("bob's") else 401
                async with open_http(
                    url, path, headers=headers + replay_headers
                ) as http:
                    with trio.fail_after(10):
                        status = await http.receive_response()
                        assert status == expected, (mode, what)
                        await http.read_to_end()
                # A complete, short, non-streaming answer: nothing of alice's.
                assert http.complete
                assert not http.headers["content-type"].startswith("text/event-stream")
                assert SECRET_TEXT.encode() not in http.raw
                assert b"data:" not in http.raw and b"id:" not in http.raw
                if expected == 401:
                    assert http.headers["www-authenticate"].startswith("Bearer")
                # Refused before subscribing: alice's only subscriber is alice.
                assert users.subscriber_count("alice") == 1
                # Live: what is published after the refusal reaches alice only.
                refused += 1
                await users.publish(
                    "alice",
                    load("notifications").notification("live", f"live {refused}"),
                )
        with trio.fail_after(10):
            got = await read_events(alice, 2 + refused)
    texts = [json.loads(e.data)["text"] for e in got]
    assert texts == ["hi", SECRET_TEXT] + [f"live {n}" for n in range(1, refused + 1)]
    assert refused == 3 * (1 + 6 * 3)


async def test_bob_reads_only_his_own_keys_and_ids_count_only_his(
    load: Any, open_server: Any, open_http: Any
) -> None:
    app = make_app(load)
    users = app.state["users"]
    notification = load("notifications").notification
    alice_ids = [
        await users.publish("alice", notification("note", SECRET_TEXT))
        for _ in range(5)
    ]
    bob_id = await users.publish("bob", notification("note", "for bob"))
    # Bob's first id says nothing of alice's five notifications.
    assert bob_id.endswith("-1") and all(
        i.endswith(f"-{n}") for n, i in enumerate(alice_ids, 1)
    )
    bob = [("cookie", f"token={token('bob')}")]
    async with open_server(app) as url:
        # Alice's ids on bob's own key: not a position there, so no replay.
        for last_id in (alice_ids[0], f"{epoch_of(alice_ids[0])}-0"):
            path = path_with("/users/bob/events", {"lastEventId": last_id})
            async with open_http(url, path, headers=bob) as http:
                with trio.fail_after(10):
                    assert await http.receive_response() == 200
                    await http.read_until(b"event: reset")
                    await users.publish("bob", notification("note", "live for bob"))
                    (live,) = await read_events(http, 1)
            assert json.loads(live.data)["text"] == "live for bob"
            assert SECRET_TEXT.encode() not in http.raw
        # His own epoch replays his own history, and only that.
        path = path_with("/users/bob/events", {"lastEventId": f"{epoch_of(bob_id)}-0"})
        async with open_http(url, path, headers=bob) as http:
            with trio.fail_after(10):
                assert await http.receive_response() == 200
                got = await read_events(http, 3)
        assert [json.loads(e.data)["text"] for e in got] == [
            "for bob",
            "live for bob",
            "live for bob",
        ]
        assert SECRET_TEXT.encode() not in http.raw


@pytest.mark.parametrize("place", ["cookie", "bearer", "query"])
async def test_a_valid_token_gets_the_replay_then_live_events(
    load: Any, open_server: Any, open_http: Any, place: str
) -> None:
    app = make_app(load)
    users = app.state["users"]
    notification = load("notifications").notification
    first = await users.publish("alice", notification("note", "one"))
    await users.publish("alice", notification("note", "two"))
    headers, query = credentials(place, token("alice"))
    path = path_with("/users/alice/events", query | {"lastEventId": first})
    async with open_server(app) as url, open_http(url, path, headers=headers) as http:
        with trio.fail_after(10):
            assert await http.receive_response() == 200
            await read_events(http, 1)
            await users.publish("alice", notification("note", "three"))
            got = await read_events(http, 2)
    assert http.headers["content-type"].startswith("text/event-stream")
    assert [json.loads(e.data)["text"] for e in got] == ["two", "three"]


async def test_the_stream_ends_when_the_token_expires(
    load: Any, open_server: Any, open_http: Any
) -> None:
    app = make_app(load)
    users = app.state["users"]
    exp = int(time.time()) + 2
    alice = [("cookie", f"token={jwt.encode({'sub': 'alice', 'exp': exp}, SECRET)}")]
    last_id: str | None = None
    ends: list[float] = []
    async with open_server(app) as url:
        with trio.fail_after(15):
            while True:
                # As an EventSource does: reconnect with the last id seen.
                extra = [("last-event-id", last_id)] if last_id else []
                async with open_http(
                    url, "/users/alice/events", headers=alice + extra
                ) as http:
                    status = await http.receive_response()
                    if status != 200:
                        await http.read_to_end()
                        break
                    if last_id is None:
                        await users.publish(
                            "alice", load("notifications").notification("note", "hi")
                        )
                    await http.read_to_end()
                ends.append(time.time())
                events = [e for e in http.events() if e.type == "notification"]
                if events:
                    last_id = events[-1].last_event_id
                # Each stream ends with a retry: for a prompt reconnection.
                assert http.body.endswith(b"retry: 1000\n\n")
    # Every stream ended by the token's expiry, then the token was refused.
    assert status == 401
    assert time.time() >= exp
    assert ends and all(end < exp + 0.5 for end in ends)
    assert last_id is not None


async def test_posts_check_origin_and_the_token(
    load: Any, open_server: Any, open_http: Any
) -> None:
    app = make_app(load)
    users = app.state["users"]
    body = b"text=hello"
    alice = [("cookie", f"token={token('alice')}"), *FORM.items()]
    async with open_server(app) as url:
        own = url  # "http://127.0.0.1:PORT", as a page of this server sends it

        async def post(
            path: str, headers: Sequence[tuple[str, str]], data: bytes = body
        ) -> HttpStream:
            async with open_http(
                url, path, method="POST", headers=headers, body=data
            ) as http:
                with trio.fail_after(10):
                    await http.read_to_end()
            return http

        cross_site: list[list[tuple[str, str]]] = [
            [],
            [("origin", "http://evil.example")],
            [("origin", "null")],
            [("origin", "http://127.0.0.1:1")],
            [("origin", own.replace("http:", "https:"))],
        ]
        for origin in cross_site:
            answer = await post("/users/alice/notify", alice + origin)
            assert answer.status == 403, origin
            answer = await post(
                "/session",
                [*FORM.items(), *origin],
                b"user=alice&password=alice-password",
            )
            assert answer.status == 403 and "set-cookie" not in answer.headers
            for route in ("/session/refresh", "/session/logout"):
                answer = await post(route, alice + origin, b"")
                assert answer.status == 403 and "set-cookie" not in answer.headers
        assert users.stats().published == 0
        same = [("origin", own)]
        assert (await post("/users/bob/notify", alice + same)).status == 403
        assert (await post("/users/alice/notify", [*FORM.items(), *same])).status == 401
        assert users.stats().published == 0
        posted = await post("/users/alice/notify", alice + same)
        assert posted.status == 201
        assert users.stats().published == 1


async def test_log_in_over_a_real_server_then_stream(
    load: Any, open_server: Any, open_http: Any
) -> None:
    app = make_app(load, token_seconds=300)
    async with open_server(app) as url:
        headers = [("origin", url), *FORM.items()]
        async with open_http(
            url, "/session", method="POST", headers=headers,
            body=b"user=alice&password=wrong",
        ) as http:  # fmt: skip
            await http.read_to_end()
        assert http.status == 401 and "set-cookie" not in http.headers
        async with open_http(
            url, "/session", method="POST", headers=headers,
            body=b"user=alice&password=alice-password",
        ) as http:  # fmt: skip
            await http.read_to_end()
        assert http.status == 200
        morsel = SimpleCookie(http.headers["set-cookie"])["token"]
        assert morsel["httponly"] and morsel["samesite"] == "Strict"
        assert morsel["path"] == "/" and morsel["max-age"] == "300"
        assert not morsel["secure"]  # plain http here; set over https
        claims = jwt.decode(morsel.value, SECRET, algorithms=["HS256"])
        assert claims["sub"] == "alice"
        assert claims["exp"] == json.loads(http.body)["exp"]
        assert 290 <= claims["exp"] - time.time() <= 300
        cookie = [("cookie", f"token={morsel.value}")]
        async with open_http(url, "/users/alice/events", headers=cookie) as stream:
            with trio.fail_after(10):
                assert await stream.receive_response() == 200


# -- in memory: the page's flow -------------------------------------------------------


async def log_in(app: Any, user: str) -> dict[str, str]:
    """Log ``user`` in as the page does; return the headers of its later requests."""
    body = urlencode({"user": user, "password": PASSWORDS[user]}).encode()
    answer = await request(app, "POST", "/session", body, {"origin": ORIGIN, **FORM})
    assert answer.status == 200, answer.body
    value = SimpleCookie(answer.headers["set-cookie"])["token"].value
    return {"cookie": f"token={value}", "origin": ORIGIN, **FORM}


async def test_session_refresh_and_log_out(load: Any) -> None:
    app = make_app(load, token_seconds=60)
    assert (await request(app, "GET", "/session")).status == 401
    headers = await log_in(app, "alice")
    session = await request(app, "GET", "/session", headers=headers)
    assert session.json()["user"] == "alice"
    refreshed = await request(app, "POST", "/session/refresh", headers=headers)
    assert refreshed.status == 200
    new = SimpleCookie(refreshed.headers["set-cookie"])["token"].value
    assert jwt.decode(new, SECRET, algorithms=["HS256"])["sub"] == "alice"
    gone = await request(app, "POST", "/session/logout", headers=headers)
    assert gone.status == 204
    cleared = SimpleCookie(gone.headers["set-cookie"])["token"]
    assert cleared.value == "" and cleared["max-age"] == "0"
    no_token = {"origin": ORIGIN}
    assert (
        await request(app, "POST", "/session/refresh", headers=no_token)
    ).status == 401


async def test_notifications_replay_after_last_event_id(load: Any) -> None:
    app = make_app(load)
    headers = await log_in(app, "alice")
    ids = []
    for text in ("first", "second", "third"):
        posted = await request(
            app, "POST", "/users/alice/notify", f"text={text}".encode(), headers
        )
        assert posted.status == 201
        ids.append(posted.json()["id"])
    # As the page does after a reload: the query parameter.
    path = f"/users/alice/events?lastEventId={ids[0]}"
    async with open_stream(app, path, headers=headers) as stream:
        got = [await next_event(stream, "notification") for _ in range(2)]
    assert [json.loads(e.data)["text"] for e in got] == ["second", "third"]
    assert [e.last_event_id for e in got] == ids[1:]
    # As the browser does when it reconnects by itself: the header.
    resume = headers | {"last-event-id": ids[1]}
    async with open_stream(app, "/users/alice/events", headers=resume) as stream:
        assert json.loads((await next_event(stream)).data)["text"] == "third"


async def test_notifications_are_per_user(load: Any) -> None:
    app = make_app(load)
    alice, bob = await log_in(app, "alice"), await log_in(app, "bob")
    async with open_stream(app, "/users/bob/events", headers=bob) as stream:
        await request(app, "POST", "/users/alice/notify", b"text=for+alice", alice)
        await request(app, "POST", "/users/bob/notify", b"text=for+bob", bob)
        assert json.loads((await next_event(stream)).data)["text"] == "for bob"


async def test_notifications_unknown_id_starts_with_reset(load: Any) -> None:
    app = make_app(load)
    headers = await log_in(app, "alice")
    path = "/users/alice/events?lastEventId=0-1"
    async with open_stream(app, path, headers=headers) as stream:
        assert (await next_event(stream)).type == "reset"


async def test_notifications_demo_task_publishes(
    load: Any, autojump_clock: Any
) -> None:
    app = make_app(load, demo_interval=4.0)
    headers = await log_in(app, "alice")
    async with (
        app.running(),
        open_stream(app, "/users/alice/events", headers=headers) as stream,
    ):
        start = trio.current_time()
        event = await next_event(stream, "notification")
        assert trio.current_time() - start == pytest.approx(4.0)
        assert json.loads(event.data)["kind"] in {
            "build",
            "review",
            "deploy",
            "mention",
        }


async def test_stream_lifetime_is_what_is_left_of_the_token(
    load: Any, autojump_clock: Any
) -> None:
    app = make_app(load)
    headers = {"cookie": f"token={token('alice', seconds=100)}"}
    async with open_stream(app, "/users/alice/events", headers=headers) as stream:
        start = trio.current_time()
        assert [event async for event in stream] == []
        # Less up to 10 % (a fleet's clients do not all come back at once).
        assert 89 <= trio.current_time() - start <= 100
    assert app.state["users"].subscriber_count("alice") == 0


def test_a_short_secret_is_refused(load: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load("notifications")
    monkeypatch.setenv("NOTIFICATIONS_SECRET", "too short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        module.make_app()
    monkeypatch.setenv("NOTIFICATIONS_SECRET", "x" * 32)
    assert module.secret_from_env() == b"x" * 32


async def test_the_cookie_is_found_among_split_cookie_headers(load: Any) -> None:
    # HTTP/2 clients may send each cookie in a header of its own.
    app = make_app(load)
    headers = [("cookie", "theme=dark"), ("cookie", f"token={token('alice')}")]
    async with open_stream(app, "/users/alice/events", headers=headers) as stream:
        assert stream.status == 200
