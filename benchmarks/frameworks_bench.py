"""Events/s through the framework adapters against a raw ``SseResponse``.

    python benchmarks/frameworks_bench.py [--conns 1000] [--events 1000] [--size 64]

Each variant is a server process running :func:`trio_sse.serve` (Hypercorn's
trio worker) with one :class:`trio_sse.Broadcaster` key and the routes of
the other benchmark servers (``GET /sse``, ``POST /publish?n=&size=&rate=``):

- ``raw``: a plain ASGI callable returning ``bc.response(stream)``;
- ``fastapi``: a FastAPI route returning
  ``trio_sse.starlette.EventSourceResponse(bc.response(stream))``;
- ``quart``: a Quart-trio route returning
  ``trio_sse.quart.EventSourceResponse(bc.response(stream))``.

The C load client (``loadgen.c``, built with gcc into ``.build/``) opens
``--conns`` connections, asks for ``--events`` events published at once and
reports how many arrived per second. The server is pinned to CPU 0 and the
client to CPU 1 when ``taskset`` exists. One run per variant; on a shared
machine the figures move by 20 % or more between runs.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# (No "from __future__ import annotations": FastAPI reads the annotations of
# routes defined inside serve().)
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BUILD = HERE / ".build"
LOADGEN = BUILD / "loadgen"
VARIANTS = ("raw", "fastapi", "quart")


# -- the servers (run with --serve VARIANT) ------------------------------------


def serve(variant: str, port: int) -> None:
    # Every variant imports both frameworks: their many long-lived objects
    # make the garbage collector's full passes rarer, which alone moves the
    # figure by more than the adapters cost.
    import fastapi  # noqa: F401
    import quart_trio  # noqa: F401
    import trio

    import trio_sse

    sys.path.insert(0, str(HERE / "peers"))
    from _common import KEY, PublishSpec, payload, raise_nofile

    raise_nofile()
    bc: trio_sse.Broadcaster[str, trio_sse.Event] = trio_sse.Broadcaster(buffer=1024)

    async def publish_events(spec: PublishSpec) -> None:
        start = time.monotonic_ns()
        for seq in range(spec.n):
            scheduled, delay = spec.delay_until(start, seq)
            if delay > 0:
                await trio.sleep(delay)
            data = payload(seq, scheduled, time.monotonic_ns(), spec.size)
            bc.send(KEY, trio_sse.Event(data))

    def subscribe() -> Any:
        return bc.response(bc.subscribe(KEY).on_lag(trio_sse.LagPolicy.SKIP))

    app: Any
    if variant == "raw":

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            if scope["path"] == "/sse":
                await subscribe()(scope, receive, send)
                return
            start = {"type": "http.response.start", "status": 202, "headers": []}
            await send(start)
            await send({"type": "http.response.body", "body": b"publishing\n"})
            await publish_events(PublishSpec.from_query(scope["query_string"]))

    elif variant == "fastapi":
        from fastapi import BackgroundTasks, FastAPI, Request
        from fastapi.responses import PlainTextResponse

        from trio_sse.starlette import EventSourceResponse

        app = FastAPI()

        @app.get("/sse")
        async def sse() -> EventSourceResponse:
            return EventSourceResponse(subscribe())

        @app.post("/publish")
        async def publish(request: Request, tasks: BackgroundTasks) -> Any:
            spec = PublishSpec.from_query(request.scope["query_string"])
            tasks.add_task(publish_events, spec)
            return PlainTextResponse("publishing\n", status_code=202)

    elif variant == "quart":
        import quart
        from quart_trio import QuartTrio

        from trio_sse.quart import EventSourceResponse as QuartResponse

        app = QuartTrio(__name__)

        @app.get("/sse")
        async def quart_sse() -> QuartResponse:
            return QuartResponse(subscribe())

        @app.post("/publish")
        async def quart_publish() -> Any:
            spec = PublishSpec.from_query(quart.request.scope["query_string"])
            app.add_background_task(publish_events, spec)
            return "publishing\n", 202

    else:
        raise SystemExit(f"unknown variant {variant!r}")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(trio_sse.serve, app, "127.0.0.1", port)

    trio.run(main)


# -- the driver ----------------------------------------------------------------


def build_loadgen() -> None:
    source = HERE / "loadgen.c"
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= source.stat().st_mtime:
        return
    BUILD.mkdir(exist_ok=True)
    cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(LOADGEN), str(source)]
    subprocess.run(cmd, check=True)


def pinned(cpu: str, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", cpu, *argv]
    return argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def measure(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(HERE)]))
    cmd = [sys.executable, __file__, "--serve", variant, "--port", str(port)]
    server = subprocess.Popen(pinned("0", cmd), env=env, start_new_session=True)
    try:
        wait_port(port, server, 30)
        query = f"/publish?n={args.events}&size={args.size}&rate=0"
        load = [
            str(LOADGEN),
            "--port",
            str(port),
            "--path",
            "/sse",
            "--conns",
            str(args.conns),
            "--events",
            str(args.events),
            "--publish",
            query,
            "--timeout",
            "20",
            "--stall",
            "5",
        ]
        out = subprocess.run(
            pinned("1", load), capture_output=True, text=True, timeout=120, check=True
        ).stdout
    finally:
        server.terminate()
        server.wait(10)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    build_loadgen()
    print(f"{args.conns} connections, {args.events} events of {args.size} B")
    print(f"{'variant':<8} {'events/s':>12} {'delivered':>10} {'p50 ms':>8}")
    rates = {}
    for variant in args.variants.split(","):
        result = measure(variant, args)
        rate = rates[variant] = result.get("events_per_s") or 0
        latency = (result.get("latency_ms") or {}).get("p50")
        delivered = result.get("delivered", 0) / max(result.get("expected", 1), 1)
        ratio = f"  ({rate / rates['raw']:.2f}x raw)" if rates.get("raw") else ""
        print(
            f"{variant:<8} {rate:>12,.0f} {delivered:>10.1%} "
            f"{latency if latency is not None else '-':>8}{ratio}"
        )


if __name__ == "__main__":
    main()
