"""Reference ceiling: a raw trio socket server with no HTTP framework.

It answers every request on ``/sse`` with SSE headers (identity body, no
chunking), encodes each published event once, and writes the same bytes to
every socket from the publisher's loop. It has no keep-alive and no
per-subscriber buffering, so it is what fan-out costs on this host with
nothing between the event and ``send()``. ``POST /publish`` works as in the
other servers.

    python raw_trio.py --port 8000
"""

from __future__ import annotations

import time

import trio
from _common import PublishSpec, parse_args, payload

HEADERS = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\nconnection: close\r\n\r\n"
)


async def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    subscribers: set[trio.SocketStream] = set()

    async def publish_events(spec: PublishSpec) -> None:
        start = time.monotonic_ns()
        for seq in range(spec.n):
            scheduled, delay = spec.delay_until(start, seq)
            if delay > 0:
                await trio.sleep(delay)
            data = payload(seq, scheduled, time.monotonic_ns(), spec.size)
            chunk = f"id: {seq}\ndata: {data}\n\n".encode()
            for stream in list(subscribers):
                try:
                    await stream.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    subscribers.discard(stream)

    async def handle(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            data = await stream.receive_some(4096)
            if not data:
                return
            request += data
        line = request.split(b"\r\n", 1)[0].split()
        target = line[1].decode()
        if target.startswith("/sse"):
            await stream.send_all(HEADERS)
            subscribers.add(stream)
            try:
                while await stream.receive_some(4096):
                    pass
            finally:
                subscribers.discard(stream)
        elif target.startswith("/publish"):
            query = target.partition("?")[2]
            await stream.send_all(
                b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n"
                b"connection: close\r\n\r\n"
            )
            await stream.aclose()
            await publish_events(PublishSpec.from_query(query))

    await trio.serve_tcp(handle, args.port, host=args.host, backlog=1024)


if __name__ == "__main__":
    trio.run(main)
