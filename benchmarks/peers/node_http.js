// Reference ceiling: Node's bare http module, no framework.
// Same routes and event format as the Python servers; the publisher encodes
// each event once and writes the same string to every response.
//
//     node node_http.js --port 8000 [--keep-alive 15]
"use strict";
const http = require("http");

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const host = opt("--host", "127.0.0.1");
const port = Number(opt("--port", "8000"));
const keepAlive = Number(opt("--keep-alive", "15"));

const subscribers = new Set();
const monoNs = () => process.hrtime.bigint(); // CLOCK_MONOTONIC

function payload(seq, scheduled, sent, size) {
  const head = `${seq} ${scheduled || sent} ${sent} `;
  return head + "x".repeat(Math.max(0, size - head.length));
}

// A checkpoint of Node's event loop: the I/O callbacks that are ready run
// before the next event (what `await asyncio.sleep(0)` is to asyncio).
const checkpoint = () => new Promise((r) => setImmediate(r));
const sleepMs = (ms) => new Promise((r) => setTimeout(r, ms));

// One publisher: see peers/_common.py. Unless `checkpoint` is off, it yields
// to the event loop before every event, when paced until that event's own
// scheduled time; it takes the next sequence number when it runs, so that
// several publishers publish in turn and in order.
async function publisher(sched) {
  const { n, size, rate, checkpointing } = sched;
  while (sched.next < n) {
    let scheduled = 0n;
    if (checkpointing) {
      if (rate > 0) {
        scheduled = sched.start + BigInt(Math.round((sched.next * 1e9) / rate));
        let slept = false;
        for (let ms; (ms = Number(scheduled - monoNs()) / 1e6) > 0; slept = true) {
          await sleepMs(Math.ceil(ms));
        }
        if (!slept) await checkpoint();
      } else {
        await checkpoint();
      }
    }
    if (sched.next >= n) return;
    const seq = sched.next++;
    if (rate > 0) scheduled = sched.start + BigInt(Math.round((seq * 1e9) / rate));
    const chunk = `id: ${seq}\ndata: ${payload(seq, scheduled, monoNs(), size)}\n\n`;
    for (const res of subscribers) res.write(chunk);
  }
}

function publish(q) {
  const sched = {
    n: Number(q.get("n") || 1000),
    size: Number(q.get("size") || 64),
    rate: Number(q.get("rate") || 0),
    checkpointing: q.get("checkpoint") !== "0",
    start: monoNs(),
    next: 0,
  };
  const publishers = Number(q.get("publishers") || 1);
  for (let i = 0; i < publishers; i++) publisher(sched);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/sse") {
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
    });
    res.flushHeaders();
    subscribers.add(res);
    const timer = setInterval(() => res.write(": keep-alive\n\n"), keepAlive * 1000);
    req.on("close", () => {
      clearInterval(timer);
      subscribers.delete(res);
    });
  } else if (url.pathname === "/publish" && req.method === "POST") {
    res.writeHead(202).end("publishing\n");
    publish(url.searchParams);
  } else if (url.pathname === "/stats") {
    res.end(`subscribers ${subscribers.size}\n`);
  } else {
    res.writeHead(404).end();
  }
});
server.keepAliveTimeout = 0;
server.requestTimeout = 0;
server.headersTimeout = 0;
server.listen({ host, port, backlog: 1024 });
