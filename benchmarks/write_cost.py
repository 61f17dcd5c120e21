"""Server CPU per body write under trio_sse.serve(): ASGI send vs its body writer.

A stream's body is written one chunk at a time. Through ASGI, each chunk is
a message that passes Hypercorn's HTTP stream and protocol objects and h11's
state machine before the socket; :func:`trio_sse.serve` also offers
responses a body writer (``scope["trio_sse.body_writer"]``) that frames the
chunk itself and sends it under the connection's send lock, as Hypercorn's
own send does. This script serves one HTTP/1.1 response on 127.0.0.1 that
writes ``--writes`` chunks of ``--size`` bytes either way, read by a client
process (``curl``), and prints the server's CPU time per write (the median
of ``--rounds`` rounds, the two ways interleaved) as one JSON object.

    python benchmarks/write_cost.py --writes 20000 --size 64 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from typing import Any

import trio

import trio_sse

BODY_WRITER = "trio_sse.body_writer"


def make_app(writes: int, size: int, mode: str, cpu: list[float]) -> Any:
    data = b"data: " + b"x" * max(0, size - 8) + b"\n\n"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
        await send(start)
        writer = scope.get(BODY_WRITER)
        if mode == "body-writer" and writer is None:
            raise SystemExit("serve() offered no body writer")
        began = time.process_time()
        if mode == "asgi":
            message = {"type": "http.response.body", "body": data, "more_body": True}
            for _ in range(writes):
                await send(message)
        else:
            for _ in range(writes):
                await writer.write(data)
        cpu.append(time.process_time() - began)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def one_round(writes: int, size: int, mode: str) -> float:
    cpu: list[float] = []
    app = make_app(writes, size, mode, cpu)
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(trio_sse.serve, app, "127.0.0.1", 0)
        result = await trio.run_process(
            ["curl", "-sN", "-o", "/dev/null", "-w", "%{size_download}", urls[0]],
            capture_stdout=True,
        )
        nursery.cancel_scope.cancel()
    expected = writes * (size if size >= 8 else 8)
    if int(result.stdout) < expected:
        raise SystemExit(f"the client read {result.stdout!r} bytes, not {expected}")
    return cpu[0] / writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("needs curl")
    samples: dict[str, list[float]] = {"asgi": [], "body-writer": []}
    for _ in range(opts.rounds):
        for mode, out in samples.items():
            out.append(trio.run(one_round, opts.writes, opts.size, mode))
    us = {mode: round(statistics.median(s) * 1e6, 2) for mode, s in samples.items()}
    print(
        json.dumps(
            {
                "writes": opts.writes,
                "size": opts.size,
                "rounds": opts.rounds,
                "cpu_us_per_write": us,
                "ratio": round(us["body-writer"] / us["asgi"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
