// Opens a page in headless Chromium at one viewport size, waits until
// SELECTOR exists, and prints the page's layout as one JSON line:
// {"ok": true, "layout": {...}} or {"ok": false, "error": ...}.
//
//   node layout.mjs URL WIDTH HEIGHT SELECTOR [TIMEOUT_MS]
//
// layout: the viewport width, the document's scroll width, and the
// bounding box of every element matching [data-layout] (name: its value).
// CHROMIUM names the browser binary (default /usr/bin/chromium).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, width, height, selector, timeoutArg] = process.argv.slice(2);
if (!selector) {
  process.stderr.write("usage: node layout.mjs URL WIDTH HEIGHT SELECTOR [TIMEOUT_MS]\n");
  process.exit(2);
}
const timeout = Number(timeoutArg ?? 20000);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const userDataDir = mkdtempSync(join(tmpdir(), "trio-sse-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    timeout,
    viewport: { width: Number(width), height: Number(height) },
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
  await page.goto(url, { timeout });
  await page.waitForSelector(selector, { timeout, state: "attached" });
  const layout = await page.evaluate(() => ({
    innerWidth: window.innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    boxes: [...document.querySelectorAll("[data-layout]")].map((el) => {
      const r = el.getBoundingClientRect();
      return { name: el.dataset.layout, left: r.left, right: r.right, top: r.top, width: r.width };
    }),
  }));
  process.stdout.write(JSON.stringify({ ok: true, layout }) + "\n");
} catch (error) {
  const text = String((error && error.stack) || error);
  process.stdout.write(JSON.stringify({ ok: false, error: text }) + "\n");
  process.exitCode = 1;
} finally {
  if (context) await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
