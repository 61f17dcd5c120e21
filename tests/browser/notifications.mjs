// Drives examples/notifications.py in headless Chromium as a user would:
// log in, send a notification, leave and come back (replay), stay past the
// token's expiry (refresh, then reconnect), log out. Prints one JSON line:
// {"ok": true, "report": {...}} or {"ok": false, "error": ...}.
//
//   node notifications.mjs URL USER PASSWORD [TIMEOUT_MS]
//
// CHROMIUM names the browser binary (default /usr/bin/chromium).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, user, password, timeoutArg] = process.argv.slice(2);
if (!password) {
  process.stderr.write("usage: node notifications.mjs URL USER PASSWORD [TIMEOUT_MS]\n");
  process.exit(2);
}
const timeout = Number(timeoutArg ?? 30000);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const userDataDir = mkdtempSync(join(tmpdir(), "trio-sse-chromium-"));
const console = [];
const streams = []; // status of every response of the stream route
const log = []; // every response: "seconds METHOD /path status"
const started = Date.now();
let step = "launch";
let context;
// The whole run, not each step, gets TIMEOUT_MS: report where it stood.
const watchdog = setTimeout(() => {
  process.stdout.write(JSON.stringify({ ok: false, error: `timed out at: ${step}`, console, log }) + "\n");
  process.exit(1);
}, timeout);
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    timeout,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  context.setDefaultTimeout(timeout);
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (message) => console.push(message.text()));
  page.on("pageerror", (error) => console.push(`pageerror: ${error.message}`));
  page.on("response", (response) => {
    const path = new URL(response.url()).pathname;
    const at = ((Date.now() - started) / 1000).toFixed(1);
    log.push(`${at} ${response.request().method()} ${path} ${response.status()}`);
    if (path === `/users/${user}/events`) streams.push(response.status());
  });
  const item = (text) => page.locator("#list li", { hasText: text });
  const report = {};

  step = "wrong password";
  // Logged out: the login form, and a wrong password is refused.
  await page.goto(url + "/");
  await page.locator("#login").waitFor({ state: "visible" });
  await page.fill("#login-user", user);
  await page.fill("#login-password", "wrong");
  await page.click("#login-form button");
  await page.locator("#login-error").waitFor({ state: "visible" });
  report.wrongPassword = await page.textContent("#login-error");

  step = "log in";
  // Log in: the stream opens with the cookie, which scripts cannot read.
  await page.fill("#login-password", password);
  await page.click("#login-form button");
  await page.waitForFunction(() => document.getElementById("state").textContent === "live");
  report.cookieVisibleToScript = document_cookie_has_token(await page.evaluate(() => document.cookie));

  step = "send";
  // The form's POST passes the Origin check; the notification comes back.
  await page.fill("#text", "from the browser");
  await page.click("#send button");
  await item("from the browser").waitFor();

  step = "leave and come back";
  // Leave; a notification arrives meanwhile; come back: it is replayed.
  await page.goto("about:blank");
  const posted = await context.request.post(`${url}/users/${user}/notify`, {
    form: { text: "while away" },
    headers: { origin: url },
  });
  report.postedWhileAway = posted.status();
  await page.goto(url + "/");
  await item("while away").waitFor();
  report.replayed = await item("while away").count();
  report.keptItem = await item("from the browser").count();

  step = "outlive the token";
  // Stay past the token's expiry: the page refreshes its token, the server
  // ends the stream when the old one expires, the EventSource reconnects.
  const opened = streams.length;
  await page.waitForFunction(
    () => document.getElementById("state").textContent === "live",
  );
  const deadline = Date.now() + timeout;
  while (streams.length < opened + 1 && Date.now() < deadline) {
    await page.waitForEvent("response", { timeout: deadline - Date.now() });
  }
  await page.waitForFunction(() => document.getElementById("state").textContent === "live");
  step = "send after the reconnect";
  await page.fill("#text", "after the reconnect");
  await page.click("#send button");
  await item("after the reconnect").waitFor();
  report.loginShownAfterExpiry = await page.locator("#login").isVisible();

  step = "log out";
  // Log out: the form again, and the cookie is gone.
  await page.click("#logout");
  await page.locator("#login").waitFor({ state: "visible" });
  const after = await context.request.get(`${url}/users/${user}/events`);
  report.streamAfterLogout = after.status();
  report.streams = streams;
  process.stdout.write(JSON.stringify({ ok: true, report, console }) + "\n");
} catch (error) {
  const text = `${step}: ${String((error && error.stack) || error)}`;
  process.stdout.write(JSON.stringify({ ok: false, error: text, console, log }) + "\n");
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  if (context) await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}

function document_cookie_has_token(cookie) {
  return cookie.split(";").some((part) => part.trim().startsWith("token="));
}
