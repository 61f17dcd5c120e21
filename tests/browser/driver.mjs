// Opens a page in headless Chromium and prints the page's window.verdict as
// one JSON line: {"ok": true, "verdict": ...} or {"ok": false, "error": ...}.
//
//   node driver.mjs URL [TIMEOUT_MS]
//
// CHROMIUM names the browser binary (default /usr/bin/chromium).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, timeoutArg] = process.argv.slice(2);
if (!url) {
  process.stderr.write("usage: node driver.mjs URL [TIMEOUT_MS]\n");
  process.exit(2);
}
const timeout = Number(timeoutArg ?? 20000);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const userDataDir = mkdtempSync(join(tmpdir(), "trio-sse-chromium-"));
const console = [];
let context;
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
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (message) => console.push(message.text()));
  page.on("pageerror", (error) => console.push(`pageerror: ${error.message}`));
  await page.goto(url, { timeout });
  const handle = await page.waitForFunction(() => window.verdict, null, { timeout });
  const verdict = await handle.jsonValue();
  verdict.userAgent = await page.evaluate(() => navigator.userAgent);
  verdict.browserVersion = context.browser()?.version() ?? null;
  process.stdout.write(JSON.stringify({ ok: true, verdict, console }) + "\n");
} catch (error) {
  const text = String((error && error.stack) || error);
  process.stdout.write(JSON.stringify({ ok: false, error: text, console }) + "\n");
  process.exitCode = 1;
} finally {
  if (context) await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
