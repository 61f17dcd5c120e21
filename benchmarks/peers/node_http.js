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

async function publish(n, size, rate) {
  const start = monoNs();
  for (let seq = 0; seq < n; seq++) {
    let scheduled = 0n;
    if (rate > 0) {
      scheduled = start + BigInt(Math.round((seq * 1e9) / rate));
      const delayMs = Number(scheduled - monoNs()) / 1e6;
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    }
    const chunk = `id: ${seq}\ndata: ${payload(seq, scheduled, monoNs(), size)}\n\n`;
    for (const res of subscribers) res.write(chunk);
  }
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
    const q = url.searchParams;
    publish(Number(q.get("n") || 1000), Number(q.get("size") || 64), Number(q.get("rate") || 0));
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
