"""examples/notifications.py in a real browser: login, replay, token refresh.

Headless Chromium, driven by playwright-core (``tests/browser/notifications.mjs``),
uses the page as a person would, against :func:`trio_sse.serve` on
127.0.0.1: a wrong password is refused; logging in opens the stream with an
``HttpOnly`` cookie scripts cannot read; the form's POST passes the
``Origin`` check; a notification sent while the page was closed is replayed
on return; the page outlives its token (it refreshes the cookie, the server
ends the stream at the old token's expiry, the ``EventSource`` reconnects
with the new one); logging out clears the cookie.

Needs ``apt-get install -y chromium`` and ``npm ci --prefix tests/browser``.
Without them the test skips, except when ``CI=true``, where it fails.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import trio
from helpers import BROWSER_DIR, CHROMIUM, serve_app

pytestmark = pytest.mark.browser

LIMIT = 90  # seconds: launching a browser on a busy machine is slow
TOKEN_SECONDS = 12  # short, so that the page outlives its first token


async def test_notifications_page_in_chromium(
    browser_required: None, load: Any
) -> None:
    passwords = {"alice": "correct horse", "bob": "battery staple"}
    app = load("notifications").make_app(
        demo_interval=None, passwords=passwords, token_seconds=TOKEN_SECONDS
    )
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url:
            result = await trio.run_process(
                [
                    "node",
                    str(BROWSER_DIR / "notifications.mjs"),
                    url,
                    "alice",
                    passwords["alice"],
                    str((LIMIT - 10) * 1000),
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=dict(os.environ, CHROMIUM=CHROMIUM),
            )
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"notifications.mjs printed nothing:\n{result.stderr.decode()}"
    outcome = json.loads(lines[-1])
    assert outcome["ok"], (outcome.get("error"), outcome.get("log"))
    report = outcome["report"]
    assert report["wrongPassword"] == "Wrong user or password."
    assert report["cookieVisibleToScript"] is False
    assert report["postedWhileAway"] == 201
    assert report["replayed"] == 1 and report["keptItem"] == 1
    assert report["loginShownAfterExpiry"] is False
    assert report["streamAfterLogout"] == 401
    # First visit, return, and at least one reconnection after the first
    # token expired. (On a loaded machine the reconnection may race the
    # refresh and be refused once; the page then opens the stream again.)
    streams = report["streams"]
    assert streams.count(200) >= 3 and streams[-1] == 200, streams
    assert set(streams) <= {200, 401}, streams
    # Alice's notifications, in the order sent, nothing else.
    users = app.state["users"]
    assert users.subscriber_count("alice") == 0
    assert users.stats().published == 3
