"""Reference ceiling: a raw trio socket server with no HTTP framework.

It answers ``GET /sse`` with SSE headers (identity body, no chunking),
encodes each published event once and writes the same bytes to every socket
straight from the publisher's loop with a non-blocking ``send()``; whatever
a socket does not take at once waits in that connection's buffer for a
writer task. No keep-alive, no per-subscriber queue of events: this is what
fan-out costs on this host with almost nothing between the event and the
kernel. ``POST /publish`` works as in the other servers.

    python raw_trio.py --port 8000
"""

from __future__ import annotations

import socket

import trio
from _common import PublishSpec, Schedule, parse_args

HEADERS = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\nconnection: close\r\n\r\n"
)


class Subscriber:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = bytearray()
        self.wake = trio.Event()

    def write(self, chunk: bytes) -> None:
        if self.pending:
            self.pending += chunk
            return
        try:
            sent = self.sock.send(chunk)
        except BlockingIOError:
            sent = 0
        except OSError:
            return
        if sent < len(chunk):
            self.pending += chunk[sent:]
            self.wake.set()

    async def writer(self) -> None:
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            while self.pending:
                await trio.lowlevel.wait_writable(self.sock)
                try:
                    sent = self.sock.send(self.pending)
                except BlockingIOError:
                    continue
                del self.pending[:sent]


async def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    subscribers: set[Subscriber] = set()

    async def publisher(sched: Schedule) -> None:
        checkpoint = sched.spec.checkpoint
        while (delay := sched.delay()) is not None:
            if checkpoint:
                await trio.sleep(delay)
            item = sched.take()
            if item is None:
                return
            seq, data = item
            chunk = f"id: {seq}\ndata: {data}\n\n".encode()
            for sub in subscribers:
                sub.write(chunk)

    async def publish_events(spec: PublishSpec) -> None:
        sched = Schedule(spec)
        async with trio.open_nursery() as nursery:
            for _ in range(spec.publishers):
                nursery.start_soon(publisher, sched)

    async def read_request(sock: socket.socket) -> bytes:
        request = b""
        while b"\r\n\r\n" not in request:
            await trio.lowlevel.wait_readable(sock)
            data = sock.recv(4096)
            if not data:
                return b""
            request += data
        return request

    async def handle(sock: socket.socket) -> None:
        with sock:
            request = await read_request(sock)
            if not request:
                return
            target = request.split(b"\r\n", 1)[0].split()[1].decode()
            if target.startswith("/sse"):
                sub = Subscriber(sock)
                sub.write(HEADERS)
                subscribers.add(sub)
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(sub.writer)
                        while True:  # until the client closes
                            await trio.lowlevel.wait_readable(sock)
                            if not sock.recv(4096):
                                break
                        nursery.cancel_scope.cancel()
                finally:
                    subscribers.discard(sub)
            elif target.startswith("/publish"):
                sock.send(
                    b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n"
                    b"connection: close\r\n\r\n"
                )
                await publish_events(PublishSpec.from_query(target.partition("?")[2]))

    listener = trio.socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await listener.bind((args.host, args.port))
    listener.listen(1024)
    async with trio.open_nursery() as nursery:
        while True:
            conn, _ = await listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = socket.socket(fileno=conn.detach())
            sock.setblocking(False)
            nursery.start_soon(handle, sock)


if __name__ == "__main__":
    trio.run(main)
