"""The WebSocket chat example in a real browser.

Headless Chromium, driven by playwright-core from npm (``tests/browser``),
opens ``examples/chat_ws.py`` served by :func:`trio_sse.serve` in two
pages. Each page's WebSocket posts with ``on_message`` and reads the room;
one page then drops its socket, misses a message, reconnects with
``?lastEventId=`` and gets it replayed once.

Needs ``apt-get install -y chromium`` and ``npm ci --prefix tests/browser``.
Without them the test skips, except when ``CI=true``, where it fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import serve_app

pytestmark = pytest.mark.browser

HERE = Path(__file__).parent / "browser"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
LIMIT = 90  # seconds: launching a browser on a busy machine is slow

# Two pages in one room: alice and bob chat, alice drops her socket, bob
# speaks meanwhile, alice comes back with lastEventId and reads it once.
DRIVER = r"""
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, timeoutArg] = process.argv.slice(2);
const timeout = Number(timeoutArg);
const userDataDir = mkdtempSync(join(tmpdir(), "trio-sse-chromium-"));
const console = [];
let context;
const texts = (page) => page.$$eval(
  "#log .msg div:last-child", (els) => els.map((e) => e.textContent));
const online = (page, n) => page.waitForFunction(
  (n) => document.getElementById("online").textContent === `${n} online`,
  n, { timeout });
const sees = (page, text) => page.waitForFunction(
  (text) => [...document.querySelectorAll("#log .msg")]
    .some((e) => e.textContent.includes(text)),
  text, { timeout });
async function say(page, user, text) {
  await page.fill("#user", user);
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    timeout,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update",
           "--disable-sync"],
  });
  const alice = context.pages()[0] ?? (await context.newPage());
  const bob = await context.newPage();
  for (const page of [alice, bob]) {
    page.on("console", (m) => console.push(m.text()));
    page.on("pageerror", (e) => console.push(`pageerror: ${e.message}`));
  }
  await alice.goto(url, { timeout });
  await bob.goto(url, { timeout });
  await online(alice, 2);
  await online(bob, 2);
  await say(alice, "alice", "hello from alice");
  await sees(bob, "hello from alice");
  await say(bob, "bob", "hi alice");
  await sees(alice, "hi alice");
  const firstUrl = await alice.evaluate(() => window.chatSocket.url);
  // Alice drops her socket: the page reconnects after the server's retry: (1 s).
  await alice.evaluate(() => window.chatSocket.close());
  await online(bob, 1);
  await say(bob, "bob", "while you were away");
  await sees(bob, "while you were away");
  await sees(alice, "while you were away");
  await online(alice, 2);
  const verdict = {
    alice: await texts(alice),
    bob: await texts(bob),
    firstUrl,
    secondUrl: await alice.evaluate(() => window.chatSocket.url),
    browserVersion: context.browser()?.version() ?? null,
  };
  process.stdout.write(JSON.stringify({ ok: true, verdict, console }) + "\n");
} catch (error) {
  const text = String((error && error.stack) || error);
  process.stdout.write(JSON.stringify({ ok: false, error: text, console }) + "\n");
  process.exitCode = 1;
} finally {
  if (context) await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
"""


def missing_requirements() -> list[str]:
    missing = []
    if shutil.which("node") is None:
        missing.append("node (Node.js 18 or later)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        missing.append("playwright-core (npm ci --prefix tests/browser)")
    return missing


@pytest.fixture
def browser_ready() -> None:
    missing = missing_requirements()
    if missing:
        message = "browser test needs: " + "; ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: not skipping)")
        pytest.skip(message)


@pytest.fixture
def chat_ws(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``examples/chat_ws.py`` (it imports ``_router`` from its folder)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(
        "example_chat_ws", EXAMPLES / "chat_ws.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def run_driver(url: str) -> dict[str, Any]:
    env = dict(os.environ, CHROMIUM=CHROMIUM)
    result = await trio.run_process(
        ["node", "--input-type=module", "-", url, str((LIMIT - 10) * 1000)],
        stdin=DRIVER.encode(),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=HERE,  # resolves playwright-core from tests/browser/node_modules
        env=env,
    )
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"driver printed nothing; stderr:\n{result.stderr.decode()}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert report["ok"], (report.get("error"), report.get("console"))
    assert result.returncode == 0
    return report


async def test_chromium_websocket_chat(browser_ready: None, chat_ws: Any) -> None:
    app = chat_ws.make_app()
    rooms = app.state["rooms"]
    with trio.fail_after(LIMIT):
        async with serve_app(app) as url:
            report = await run_driver(url + "/?room=browsers")
    verdict = report["verdict"]
    said = ["hello from alice", "hi alice", "while you were away"]
    assert verdict["bob"] == said
    # Alice read the message sent while she was away exactly once, in order.
    assert verdict["alice"] == said
    assert "lastEventId" not in verdict["firstUrl"]
    assert "lastEventId=" in verdict["secondUrl"]
    # The pages left: their subscriptions are gone.
    assert rooms.subscriber_count("browsers") == 0
    print(f"\n{verdict['browserVersion']}: WebSocket chat, reconnect with lastEventId")
