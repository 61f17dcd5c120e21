"""Per-user notifications behind a login, and nothing missed across a reload.

Run ``python examples/notifications.py``, open http://127.0.0.1:8000/ and
log in as alice or bob with the password the server prints. A demo task
notifies both every few seconds; send yourself more with the form. Reload
the page (or close it for a while): it reconnects with the id of the last
notification it saw and the server replays what it missed from its history,
tagged "missed while away".

Each user is a key of a :class:`trio_sse.Broadcaster` with ``history=200``;
its ids count that user's notifications only. Authentication is the
application's (docs/security.md explains each step):

- ``POST /session`` checks the password and sets a signed JWT (HS256, with
  PyJWT) in an ``HttpOnly``, ``SameSite=Strict`` cookie. The key comes from
  ``NOTIFICATIONS_SECRET`` (32 bytes or more), or is made at startup.
- ``GET /users/{user}/events`` verifies the token (the cookie, an
  ``Authorization: Bearer`` header or ``?access_token=``) before it
  subscribes: 401 when it is missing, forged or expired, 403 for another
  user's key, and no stream at all in either case. The key is the token's
  user, so a ``Last-Event-ID`` replay only reads that user's items.
- The stream ends when the token expires (``lifetime=``). The page gets a
  fresh token halfway through, so its ``EventSource`` reconnects with it
  and resumes; without one it gets a 401 and the page asks to log in.
- Every POST answers 403 unless its ``Origin`` is this server's own (CSRF).
"""

from __future__ import annotations

import hmac
import itertools
import os
import secrets
import time
from collections.abc import Mapping
from http.cookies import SimpleCookie
from typing import Any

import jwt
import trio
from _router import App, ASGIApp, Request, json_response, page, response, run

from trio_sse import Broadcaster, Event, SseConfig, last_event_id

DEMO_USERS = ("alice", "bob")
DEMO_MESSAGES = (
    ("build", "Build #{n} passed"),
    ("review", "Your review was requested on PR #{n}"),
    ("deploy", "Deploy {n} reached production"),
    ("mention", "You were mentioned in #general ({n})"),
)
COOKIE = "token"
ALGORITHM = "HS256"
TOKEN_SECONDS = 15 * 60


def notification(kind: str, text: str) -> Event:
    payload = {"kind": kind, "text": text, "sent": round(time.time() * 1000)}
    return Event.json(payload, event="notification")


def secret_from_env() -> bytes:
    """``NOTIFICATIONS_SECRET``, or a random key (tokens die with the process)."""
    value = os.environ.get("NOTIFICATIONS_SECRET")
    if value is None:
        return secrets.token_bytes(32)
    if len(value.encode()) < 32:
        raise ValueError("NOTIFICATIONS_SECRET must have at least 32 bytes for HS256")
    return value.encode()


def token_of(request: Request) -> str | None:
    """The request's token: ``Authorization: Bearer``, the cookie, or the query.

    A browser's ``EventSource`` cannot set headers: it sends the cookie, or
    the page puts the token in ``?access_token=``.
    """
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    # HTTP/2 may split the cookies over several headers.
    cookies = [v for k, v in request.scope["headers"] if k.lower() == b"cookie"]
    cookie = SimpleCookie(b"; ".join(cookies).decode("latin-1")).get(COOKIE)
    if cookie is not None and cookie.value:
        return cookie.value
    return request.query.get("access_token") or None


def same_origin(request: Request) -> bool:
    """Whether a request comes from a page of this server (a CSRF check).

    Browsers send ``Origin`` with every POST, and a page of another site
    cannot forge it. Behind a proxy, let ``ProxyFixMiddleware`` restore the
    public scheme and host.
    """
    host = request.headers.get("host")
    origin = f"{request.scope['scheme']}://{host}"
    return host is not None and request.headers.get("origin") == origin


def session_cookie(request: Request, token: str, max_age: int) -> dict[str, str]:
    """The ``set-cookie`` header of the session: script and other sites
    cannot read it or send it along."""
    cookie: SimpleCookie = SimpleCookie()
    cookie[COOKIE] = token
    morsel = cookie[COOKIE]
    morsel.update({"path": "/", "max-age": str(max_age), "samesite": "Strict"})
    morsel["httponly"] = True
    morsel["secure"] = request.scope["scheme"] == "https"
    return {"set-cookie": morsel.OutputString()}


def unauthorized(request: Request) -> ASGIApp:
    """401 with the challenge RFC 6750 asks for (an error when a token came)."""
    challenge = 'Bearer realm="notifications"'
    if token_of(request) is not None:
        challenge += ', error="invalid_token"'
    return response("log in first", status=401, headers={"www-authenticate": challenge})


def make_app(
    *,
    demo_interval: float | None = 4.0,
    secret: bytes | None = None,
    passwords: Mapping[str, str] | None = None,
    token_seconds: int = TOKEN_SECONDS,
) -> App:
    """The notifications application; ``demo_interval=None`` turns the demo off.

    ``passwords`` maps users to passwords (default: a random one for each
    demo user, in ``app.state["passwords"]``).
    """
    key = secret_from_env() if secret is None else secret
    if passwords is None:
        passwords = {user: secrets.token_urlsafe(9) for user in DEMO_USERS}
    config = SseConfig(keep_alive=15.0, retry=1.0, replay_reset_event="reset")
    users: Broadcaster[str, Event] = Broadcaster(buffer=32, config=config, history=200)
    app = App()
    app.state.update(users=users, passwords=passwords)

    def verify(request: Request) -> dict[str, Any] | None:
        """The token's claims if its signature and expiry check out."""
        token = token_of(request)
        if token is None:
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
            )
        except jwt.InvalidTokenError:
            return None
        return claims

    def signed_in(request: Request, user: str) -> ASGIApp:
        """A fresh token for ``user``, set as the session cookie."""
        exp = int(time.time()) + token_seconds
        token = jwt.encode({"sub": user, "exp": exp}, key, algorithm=ALGORITHM)
        cookie = session_cookie(request, token, token_seconds)
        return json_response({"user": user, "exp": exp}, headers=cookie)

    async def demo() -> None:
        for n in itertools.count(1):
            await trio.sleep(demo_interval or 0)
            kind, text = DEMO_MESSAGES[n % len(DEMO_MESSAGES)]
            for user in DEMO_USERS:
                await users.publish(user, notification(kind, text.format(n=n)))

    if demo_interval is not None:
        app.background(demo)

    @app.route("GET", "/")
    async def index(request: Request) -> Any:
        return page("notifications.html")

    @app.route("GET", "/session")
    async def session(request: Request) -> Any:
        claims = verify(request)
        if claims is None:
            return unauthorized(request)
        return json_response({"user": claims["sub"], "exp": claims["exp"]})

    @app.route("POST", "/session")
    async def log_in(request: Request) -> Any:
        if not same_origin(request):
            return response("cross-site request refused", status=403)
        form = await request.form()
        user, password = form.get("user", ""), form.get("password", "")
        expected = passwords.get(user)
        if expected is None or not hmac.compare_digest(
            expected.encode(), password.encode()
        ):
            return response("wrong user or password", status=401)
        return signed_in(request, user)

    @app.route("POST", "/session/refresh")
    async def refresh(request: Request) -> Any:
        if not same_origin(request):
            return response("cross-site request refused", status=403)
        claims = verify(request)
        if claims is None:
            return unauthorized(request)
        return signed_in(request, claims["sub"])

    @app.route("POST", "/session/logout")
    async def log_out(request: Request) -> Any:
        if not same_origin(request):
            return response("cross-site request refused", status=403)
        return response(b"", status=204, headers=session_cookie(request, "", 0))

    @app.route("GET", "/users/{user}/events")
    async def events(request: Request) -> Any:
        # Checked before subscribing: a refused client gets no byte of it.
        claims = verify(request)
        lifetime = 0.0 if claims is None else claims["exp"] - time.time()
        if claims is None or lifetime <= 0:
            return unauthorized(request)
        user = request.params["user"]
        if claims["sub"] != user:
            return response("not your notifications", status=403)
        # The key is the token's user: a Last-Event-ID replays only its items.
        # When the history no longer covers the id, the stream starts with a
        # "reset" event (SseConfig.replay_reset_event).
        stream = users.subscribe(user, last_event_id=last_event_id(request.scope))
        return users.response(stream, lifetime=lifetime)

    @app.route("POST", "/users/{user}/notify")
    async def notify(request: Request) -> Any:
        if not same_origin(request):
            return response("cross-site request refused", status=403)
        claims = verify(request)
        if claims is None:
            return unauthorized(request)
        user = request.params["user"]
        if claims["sub"] != user:
            return response("you can only notify yourself", status=403)
        text = (await request.form()).get("text", "").strip()
        if not text or len(text) > 300:
            return response("text must have 1 to 300 characters", status=400)
        event_id = await users.publish(user, notification("note", text))
        return json_response({"id": event_id}, status=201)

    return app


app = make_app()

if __name__ == "__main__":
    for name, password in app.state["passwords"].items():
        print(f"log in as {name} with the password {password}")
    run(app, "trio_sse notifications")
