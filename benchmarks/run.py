#!/usr/bin/env python3
"""Fan-out benchmark: trio_sse against other Server-Sent Events servers.

One command builds, runs and reports::

    python benchmarks/run.py            # every headline scenario, one run
    python benchmarks/run.py --quick    # the same scenarios, shorter
    python benchmarks/run.py --runs 3   # every figure the median of 3 runs

Every publisher passes its event loop's checkpoint before each event (when
paced, a sleep until that event's own scheduled time), as a publisher fed by
a socket, Redis or request handlers does; ``peers/_common.py`` has the rules.
The old burst, a publisher that never yields, is kept only as the
``*-nocheckpoint`` scenarios, run when named with ``--scenarios``.

Across cores: ``--scenarios fanout-1k-redis,paced-redis`` serves the same
1,000 subscribers from ``trio_sse_workers.py`` under ``hypercorn --workers
N``: 1 process on the memory backend, 1 and 2 processes sharing the key
through a redis-server this script starts on a free port and stops at the
end. Worker processes are pinned one per CPU; redis-server and the load
client share CPU 1. Every subscriber must get every event, so these run
until done (up to 5 minutes each) and are not part of the default run.

It creates (or reuses) the virtualenv ``benchmarks/.env`` with the peers,
trio_sse's dependencies, matplotlib and py-spy, builds the C load client
``loadgen.c`` with ``gcc -O2`` into ``benchmarks/.build/``, then for every
scenario and peer starts a fresh server pinned to one CPU (``taskset -c 0``)
and the load client pinned to the other (``taskset -c 1``). trio_sse is
imported from this checkout (not from an installed copy), or from the
checkouts given with ``--trio-sse-tree``, so that two revisions compare in one
run. It prints a table and the ratios to sse-starlette on uvicorn, writes
``benchmarks/results/<timestamp>.json`` (and ``latest.json``), the plot
``docs/_static/performance.png``, and refreshes the results block of
``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENV = HERE / ".env"
BUILD = HERE / ".build"
RESULTS = HERE / "results"
PLOT = REPO / "docs" / "_static" / "performance.png"
DOC = REPO / "docs" / "performance.md"
REQUIREMENTS = HERE / "requirements.txt"
LOADGEN = BUILD / "loadgen"
SERVER_CPU = "0"
CLIENT_CPU = "1"
# Across cores: worker process i of ``hypercorn --workers N`` runs on
# WORKER_CPUS[i % 2]; redis-server shares the load client's CPU.
WORKER_CPUS = (SERVER_CPU, CLIENT_CPU)
REDIS_CPU = CLIENT_CPU
TRIO_SSE = "trio_sse"
BASELINE = "sse-starlette/uvicorn"  # every ratio is to this peer, in the same run


# -- environment ---------------------------------------------------------------


def env_python() -> Path:
    return ENV / "bin" / "python"


def ensure_env(reinstall: bool) -> None:
    """Create or update benchmarks/.env, then re-run this script inside it."""
    stamp = ENV / ".installed"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not env_python().exists():
        print(f"creating {ENV.relative_to(REPO)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(ENV)], check=True)
    if reinstall or not stamp.exists() or stamp.read_text() != digest:
        pip = [str(env_python()), "-m", "pip", "install", "-q"]
        # trio_sse itself is not installed: servers import it from a checkout.
        subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
        stamp.write_text(digest)
    if Path(sys.prefix).resolve() != ENV.resolve():
        script = os.path.abspath(sys.argv[0])
        os.execv(str(env_python()), [str(env_python()), script, *sys.argv[1:]])


def build_loadgen() -> None:
    source = HERE / "loadgen.c"
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= source.stat().st_mtime:
        return
    BUILD.mkdir(exist_ok=True)
    cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(LOADGEN), str(source)]
    subprocess.run(cmd, check=True)


def pinned(cpu: str) -> list[str]:
    """Run on one CPU, at the priority ``--nice`` asked for (SSE_BENCH_NICE)."""
    nice = os.environ.get("SSE_BENCH_NICE")
    return ["taskset", "-c", cpu, *(["nice", "-n", nice] if nice else [])]


def prioritise(pid: int) -> None:
    """Apply ``--nice`` to the session a process leads, too.

    With Linux's autogroup scheduling, a niceness only ranks the tasks of one
    session: the CPU is first shared between sessions, so the servers and the
    load client (each leading its own session) get their group's niceness set.
    """
    nice = os.environ.get("SSE_BENCH_NICE")
    if nice:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/autogroup").write_text(nice)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- peers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    name: str
    argv: tuple[str, ...]
    note: str
    ceiling: bool = False  # a reference point, not an SSE library
    tree: Path | None = None  # the checkout trio_sse is imported from
    # > 0: ``hypercorn --workers N`` serving trio_sse_workers.py, each worker
    # with its own Broadcaster on ``backend`` ("memory" or "redis").
    workers: int = 0
    backend: str = ""

    def command(self, port: int, buffer: int, keep_alive: float) -> list[str]:
        if self.workers:
            app = f"{HERE / 'trio_sse_workers.py'}:app"
            bind = ["--bind", f"127.0.0.1:{port}"]
            return [*pinned(SERVER_CPU), *self.argv, *bind, app]
        extra = ["--port", str(port), "--keep-alive", str(keep_alive)]
        if not self.argv[0].endswith("node"):
            extra += ["--buffer", str(buffer)]
        return [*pinned(SERVER_CPU), *self.argv, *extra]

    def pythonpath(self) -> str:
        """The peers' directory, then the trio_sse checkout, then PYTHONPATH."""
        path = [str(HERE / "peers"), str(self.tree or REPO)]
        path += filter(None, [os.environ.get("PYTHONPATH")])
        return os.pathsep.join(path)

    def environ(self, buffer: int, keep_alive: float) -> dict[str, str]:
        """What a workers peer reads from its environment (no arguments)."""
        if not self.workers:
            return {}
        return {
            "SSE_BENCH_BACKEND": self.backend,
            "SSE_BENCH_BUFFER": str(buffer),
            "SSE_BENCH_KEEP_ALIVE": str(keep_alive),
        }


def trio_sse_peers(variants: list[str], trees: list[Path]) -> list[Peer]:
    """trio_sse in each response variant, from this checkout and from ``trees``."""
    py = str(env_python())
    notes = {
        "response": "Broadcaster + bc.response(stream), trio_sse.serve",
        "cast": "Broadcaster + bc.response(stream.cast_events(Event)), trio_sse.serve",
        "gc-always": "the response variant, served with "
        "trio_sse.serve(gc_freeze='always')",
    }
    out = []
    for tree in [REPO, *trees]:
        label = "" if tree == REPO else f"@{revision(tree)}"
        for variant in variants:
            if variant not in notes:
                raise SystemExit(f"unknown variant {variant!r}: {', '.join(notes)}")
            name = TRIO_SSE + ("" if variant == "response" else f"/{variant}") + label
            argv: tuple[str, ...] = (py, str(HERE / "trio_sse_app.py"))
            if variant == "gc-always":
                argv += ("--variant", "response", "--gc-freeze", "always")
            else:
                argv += ("--variant", variant)
            note = f"{notes[variant]} (Hypercorn trio worker), from {tree.name}"
            out.append(Peer(name, argv, note, tree=tree))
    return out


def make_peers(
    variants: list[str] | None = None, trees: list[Path] | None = None
) -> dict[str, Peer]:
    py = str(env_python())
    peers = HERE / "peers"
    starlette = str(peers / "sse_starlette_app.py")
    node = shutil.which("node")
    all_peers = [
        *trio_sse_peers(variants or ["response"], trees or []),
        Peer(
            "sse-starlette/uvicorn",
            (py, starlette, "--server", "uvicorn"),
            "uvicorn, uvloop + httptools; per-subscriber anyio streams",
        ),
        Peer(
            "sse-starlette/hypercorn-trio",
            (py, starlette, "--server", "hypercorn-trio"),
            "Hypercorn trio worker; per-subscriber anyio streams",
        ),
        Peer(
            "aiohttp-sse",
            (py, str(peers / "aiohttp_sse_app.py")),
            "aiohttp on uvloop; per-subscriber asyncio.Queue",
        ),
        Peer(
            "hypercorn-bare",
            (py, str(peers / "hypercorn_bare.py")),
            "floor: raw ASGI on Hypercorn's trio worker, channel + watcher task",
            ceiling=True,
        ),
        Peer(
            "raw-trio",
            (py, str(peers / "raw_trio.py")),
            "ceiling: trio sockets, no HTTP framework, encode once",
            ceiling=True,
        ),
    ]
    if node:
        all_peers.append(
            Peer(
                "node-http",
                (node, str(peers / "node_http.js")),
                "ceiling: Node's bare http module, encode once",
                ceiling=True,
            )
        )
    all_peers += workers_peers()
    return {p.name: p for p in all_peers}


def workers_peers() -> list[Peer]:
    """trio_sse across processes: ``hypercorn --workers N``, memory or Redis."""
    out = []
    for name, workers, backend in (
        ("memory-1proc", 1, "memory"),
        ("redis-1proc", 1, "redis"),
        ("redis-2proc", 2, "redis"),
    ):
        argv = (str(env_python()), "-m", "hypercorn", "--worker-class", "trio")
        argv += ("--workers", str(workers))
        on = "RedisBackend, one redis-server" if backend == "redis" else "memory"
        note = (
            f"trio_sse_workers.py under hypercorn --worker-class trio --workers "
            f"{workers}: a Broadcaster per process ({on}); the publisher awaits "
            "bc.publish() for each event"
        )
        out.append(Peer(name, argv, note, workers=workers, backend=backend))
    return out


# -- scenarios -----------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "stream" | "idle" | "inproc"
    peers: tuple[str, ...]
    conns: int = 0
    events: int = 0
    size: int = 64
    rate: float = 0.0
    publishers: int = 1
    checkpoint: bool = True  # False: the old burst, publisher never yields
    timeout: float = 30.0
    stages: str = ""
    buffer: int = 1024
    keep_alive: float = 15.0
    headline: bool = True  # run by default
    group: str = ""  # "redis": the across-cores table, its own doc block
    about: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def query(self) -> str:
        q = f"/publish?n={self.events}&size={self.size}&rate={self.rate:g}"
        q += f"&publishers={self.publishers}"
        return q + ("" if self.checkpoint else "&checkpoint=0")


TRIO_PEERS = "trio_sse*"  # every trio_sse peer of the run (variants, trees)
STREAM_PEERS = (
    TRIO_PEERS,
    "sse-starlette/uvicorn",
    "sse-starlette/hypercorn-trio",
    "aiohttp-sse",
    "hypercorn-bare",
    "raw-trio",
    "node-http",
)
IDLE_PEERS = (
    TRIO_PEERS,
    "sse-starlette/uvicorn",
    "sse-starlette/hypercorn-trio",
    "aiohttp-sse",
    "hypercorn-bare",
)
# Too slow to finish any stream scenario in time; its idle memory still counts.
QUICK_SKIP = ("sse-starlette/hypercorn-trio",)
# Across cores, through Redis: the same trio_sse app, 1 process on the memory
# backend (the reference), 1 and 2 processes sharing the key through Redis.
REDIS_PEERS = ("memory-1proc", "redis-1proc", "redis-2proc")
REDIS_BASE = "redis-1proc"  # the ratios of the Redis scenarios are to this


def make_scenarios(quick: bool) -> dict[str, Scenario]:
    cap = 10.0 if quick else 20.0
    scenarios = [
        Scenario(
            "fanout-1k",
            "stream",
            STREAM_PEERS,
            conns=1000,
            events=1000,
            size=64,
            timeout=cap,
            about="1,000 connections, 1,000 events of 64 B as fast as the "
            "publisher goes, a checkpoint before each",
        ),
        Scenario(
            "paced",
            "stream",
            STREAM_PEERS,
            conns=1000,
            events=500,
            size=256,
            rate=100.0,
            timeout=cap if quick else 30.0,
            about="1,000 connections, 100 events/s for 5 s, 256 B, the publisher "
            "sleeping until each event's scheduled time",
        ),
        Scenario(
            "burst-100",
            "stream",
            STREAM_PEERS,
            conns=100,
            events=20000,
            size=64,
            timeout=cap,
            buffer=20000,
            about="100 connections, 20,000 events of 64 B as fast as the "
            "publisher goes, a checkpoint before each",
        ),
        Scenario(
            "many-publishers",
            "stream",
            STREAM_PEERS,
            conns=1000,
            events=1000,
            size=64,
            publishers=100,
            timeout=cap,
            about="1,000 connections, 1,000 events of 64 B from 100 publisher "
            "tasks taking turns, each passing a checkpoint before each event",
        ),
        Scenario(
            "idle-latency",
            "stream",
            STREAM_PEERS,
            conns=1000,
            events=5 if quick else 20,
            size=64,
            rate=1.0,
            timeout=(5 if quick else 20) + 5.0,
            about="1,000 connections, 1 event/s of 64 B: the latency of a lone "
            "event on an idle server",
        ),
        Scenario(
            "idle",
            "idle",
            IDLE_PEERS,
            stages="5000:20,10000:20" if not quick else "5000:20",
            about="idle connections held 20 s (keep-alive every 15 s): "
            + ("5,000" if quick else "5,000 then 10,000"),
        ),
        Scenario(
            "send-cost",
            "inproc",
            (),
            params={"subscribers": 1000, "events": 100, "rounds": 9},
            about="in-process send() per subscriber, 1,000 subscribers, no HTTP",
        ),
        # Every event must reach every subscriber, so the limit is long enough
        # for the slowest setup (a million deliveries at 5,000/s); that makes
        # them too long for the default run (6 to 12 minutes more).
        Scenario(
            "fanout-1k-redis",
            "stream",
            REDIS_PEERS,
            conns=1000,
            events=1000,
            size=64,
            timeout=300.0,
            headline=False,
            group="redis",
            about="fanout-1k across processes: 1,000 connections, 1,000 events "
            "of 64 B, the publisher awaiting bc.publish() for each",
        ),
        Scenario(
            "paced-redis",
            "stream",
            REDIS_PEERS,
            conns=1000,
            events=500,
            size=256,
            rate=100.0,
            timeout=300.0,
            headline=False,
            group="redis",
            about="paced across processes: 1,000 connections, 100 events/s for "
            "5 s, 256 B, the publisher sleeping until each event's scheduled "
            "time, then awaiting bc.publish()",
        ),
        Scenario(
            "fanout-1k-nocheckpoint",
            "stream",
            STREAM_PEERS,
            conns=1000,
            events=1000,
            size=64,
            checkpoint=False,
            timeout=cap,
            headline=False,
            about="old burst: fanout-1k with a publisher that never yields "
            "between events (no real publisher does this)",
        ),
        Scenario(
            "burst-100-nocheckpoint",
            "stream",
            STREAM_PEERS,
            conns=100,
            events=20000,
            size=64,
            checkpoint=False,
            timeout=cap,
            buffer=20000,
            headline=False,
            about="old burst: burst-100 with a publisher that never yields "
            "between events (no real publisher does this)",
        ),
    ]
    return {s.name: s for s in scenarios}


def scenario_peers(sc: Scenario, peers: dict[str, Peer], quick: bool) -> list[str]:
    """The peers of ``peers`` that run ``sc``, trio_sse's first."""
    out: list[str] = []
    for want in sc.peers:
        if want == TRIO_PEERS:
            out += [p for p in peers if p.startswith(TRIO_SSE)]
        elif want in peers and not (
            quick and sc.kind == "stream" and want in QUICK_SKIP
        ):
            out.append(want)
    return out


# -- processes -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return
        time.sleep(0.05)
    raise RuntimeError("server did not start listening")


def stop(proc: subprocess.Popen[Any]) -> None:
    """End a process this script started, and its process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass(frozen=True)
class Server:
    """A running server: its process, port, and the processes that serve."""

    proc: subprocess.Popen[bytes]
    port: int
    pids: tuple[int, ...]  # the process itself, or its worker processes
    ready_dir: Path | None = None  # where a workers peer marks its workers

    def publisher_pid(self) -> int | None:
        """The worker that received ``POST /publish`` (workers peers)."""
        if self.ready_dir is None:
            return None
        marks = [int(f.name.split(".")[0]) for f in self.ready_dir.glob("*.publisher")]
        return marks[0] if len(marks) == 1 else None


@dataclass(frozen=True)
class RedisServer:
    """The run's redis-server: in memory only, on a free port of 127.0.0.1."""

    proc: subprocess.Popen[bytes]
    port: int
    version: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def command(self, *args: str) -> bytes:
        """Send one command (RESP), return the first line of the reply."""
        request = f"*{len(args)}\r\n".encode()
        for arg in args:
            request += f"${len(arg.encode())}\r\n{arg}\r\n".encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(request)
            reply = b""
            while b"\r\n" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.split(b"\r\n", 1)[0]

    def flush(self) -> None:
        """Start a server's run with an empty Redis."""
        reply = self.command("FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"redis-server answered FLUSHALL with {reply!r}")


@contextlib.contextmanager
def redis_server(log: Path) -> Iterator[RedisServer]:
    """Start redis-server (no persistence) for the run; stop it at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found (apt-get install redis-server)")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    version = next(
        (w.split("=", 1)[1] for w in out.stdout.split() if w.startswith("v=")),
        out.stdout.strip(),
    )
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, log.open("ab") as err:
        cmd = [*pinned(REDIS_CPU), binary, "--bind", "127.0.0.1", "--port", str(port),
               "--dir", tmp, "--save", "", "--appendonly", "no"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=err, stderr=err, start_new_session=True)
        prioritise(proc.pid)
        try:
            wait_port(port, proc, 10)
            server = RedisServer(proc, port, version)
            if server.command("PING") != b"+PONG":
                raise RuntimeError("redis-server does not answer PING")
            yield server
        finally:
            stop(proc)


@contextlib.contextmanager
def running_server(
    peer: Peer,
    buffer: int,
    keep_alive: float,
    log: Path,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Server]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=peer.pythonpath(), PYTHONUNBUFFERED="1")
    env |= peer.environ(buffer, keep_alive) | (extra_env or {})
    with contextlib.ExitStack() as stack:
        err = stack.enter_context(log.open("ab"))
        ready_dir = None
        if peer.workers:
            ready_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            env["SSE_BENCH_READY_DIR"] = str(ready_dir)
        proc = subprocess.Popen(
            peer.command(port, buffer, keep_alive),
            cwd=HERE / "peers",
            stdout=err,
            stderr=err,
            env=env,
            start_new_session=True,
        )
        prioritise(proc.pid)
        try:
            wait_port(port, proc, 30)
            pids: tuple[int, ...] = (proc.pid,)
            if ready_dir is not None:
                pids = wait_workers(ready_dir, peer.workers, proc, 60)
                pin_workers(pids)
            time.sleep(0.3)
            yield Server(proc, port, pids, ready_dir)
        finally:
            stop(proc)


def wait_workers(
    ready_dir: Path, n: int, proc: subprocess.Popen[bytes], timeout: float
) -> tuple[int, ...]:
    """The pids of ``n`` workers, once each has its broadcaster running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        pids = sorted(int(f.name) for f in ready_dir.iterdir() if f.name.isdigit())
        if len(pids) >= n:
            return tuple(pids)
        time.sleep(0.05)
    raise RuntimeError(f"{n} workers did not start")


def pin_workers(pids: tuple[int, ...]) -> None:
    """Worker i (and each of its threads) on CPU ``WORKER_CPUS[i % 2]``."""
    for i, pid in enumerate(pids):
        cpu = {int(WORKER_CPUS[i % len(WORKER_CPUS)])}
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), cpu)


def cpus_of(pid: int) -> str:
    """The CPUs a process may run on: "0", "0,1"."""
    return ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(pid)))


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def connections_per_process(pids: tuple[int, ...], port: int) -> list[int]:
    """Established TCP connections to ``port`` that each process holds."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01":  # ESTABLISHED
                    inodes.add(fields[9])
    counts = []
    for pid in pids:
        n = 0
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    n += link.startswith("socket:[") and link[8:-1] in inodes
        counts.append(n)
    return counts


@dataclass(frozen=True)
class Sample:
    """The servers' (and redis-server's) CPU time and memory at one moment."""

    time: float
    cpu_s: dict[int, float]
    rss_kib: int
    conns: list[int] | None = None  # per worker, for a workers peer

    @classmethod
    def take(cls, server: Server, others: tuple[int, ...], conns: bool) -> Sample:
        cpu = {}
        for pid in (*server.pids, *others):
            try:
                cpu[pid] = proc_cpu_s(pid)
            except (FileNotFoundError, ProcessLookupError, IndexError):
                cpu[pid] = 0.0
        rss = 0
        for pid in server.pids:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                rss += proc_rss_kib(pid)
        counts = connections_per_process(server.pids, server.port) if conns else None
        return cls(time.monotonic(), cpu, rss, counts)

    def cpu_pct(self, before: Sample, pid: int) -> float:
        """CPU use of ``pid`` between ``before`` and this sample, in % of a core."""
        return round(
            100 * (self.cpu_s[pid] - before.cpu_s[pid]) / (self.time - before.time), 1
        )


def run_loadgen(
    args: list[str], server: Server, wall_cap: float, others: tuple[int, ...] = ()
) -> tuple[list[dict[str, Any]], list[tuple[str, Sample]]]:
    """Run the load client; sample the server (and ``others``) at its '#' markers."""
    cmd = [*pinned(CLIENT_CPU), str(LOADGEN), *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    prioritise(proc.pid)
    records: list[dict[str, Any]] = []
    marks: list[tuple[str, Sample]] = []
    workers = server.ready_dir is not None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            mark = line.startswith("#")
            sample = Sample.take(server, others, conns=mark and workers)
            if mark:
                marks.append((line[1:].strip(), sample))
            elif line.strip():
                record = json.loads(line)
                record["_sample"] = sample
                records.append(record)
        proc.wait(wall_cap)
    finally:
        stop(proc)
    return records, marks


# -- measuring -----------------------------------------------------------------


def measure_stream(
    sc: Scenario, peer: Peer, log: Path, redis: RedisServer | None = None
) -> dict[str, Any]:
    if peer.backend == "redis":
        if redis is None:
            raise RuntimeError(f"{peer.name} needs the run's redis-server")
        redis.flush()
    env = {"SSE_BENCH_REDIS_URL": redis.url} if redis is not None else {}
    others = (redis.proc.pid,) if redis is not None and peer.backend == "redis" else ()
    with running_server(peer, sc.buffer, sc.keep_alive, log, env) as server:
        query = sc.query()
        args = [
            "--port",
            str(server.port),
            "--conns",
            str(sc.conns),
            "--events",
            str(sc.events),
            "--publish",
            query,
            "--timeout",
            str(sc.timeout),
            "--stall",
            "5",
        ]
        records, marks = run_loadgen(args, server, sc.timeout + 150, others)
        publisher = server.publisher_pid()
        cpus = [cpus_of(pid) for pid in server.pids]
    if not records:
        raise RuntimeError("load client printed no result")
    rec = records[-1]
    start = next((s for name, s in marks if name == "publish"), None)
    end: Sample = rec.pop("_sample")
    if start is not None and end.time > start.time:
        rec["server_cpu_pct"] = round(
            sum(end.cpu_pct(start, pid) for pid in server.pids), 1
        )
        if peer.workers:
            rec["worker_cpu_pct"] = [end.cpu_pct(start, pid) for pid in server.pids]
            rec["worker_conns"] = start.conns
            rec["worker_cpus"] = cpus
            rec["publisher_worker"] = (
                server.pids.index(publisher) if publisher in server.pids else None
            )
            if others:
                rec["redis_cpu_pct"] = end.cpu_pct(start, others[0])
    rec["server_rss_mib_end"] = round(end.rss_kib / 1024, 1)
    rec["delivered_pct"] = (
        round(100 * rec["delivered"] / rec["expected"], 2) if rec["expected"] else 0
    )
    # A chunked body has one chunk per write of the server.
    chunks = rec.get("chunks")
    rec["events_per_write"] = round(rec["delivered"] / chunks, 2) if chunks else None
    return rec


def measure_idle(sc: Scenario, peer: Peer, log: Path) -> dict[str, Any]:
    with running_server(peer, 128, sc.keep_alive, log) as server:
        time.sleep(0.5)
        base = sum(proc_rss_kib(pid) for pid in server.pids)
        args = ["--port", str(server.port), "--stages", sc.stages]
        records, _ = run_loadgen(args, server, 400)
    stages = []
    for rec in records:
        rss = rec.pop("_sample").rss_kib
        alive = rec["alive"]
        rec["rss_mib"] = round(rss / 1024, 1)
        rec["rss_kib_per_conn"] = round((rss - base) / alive, 2) if alive else None
        stages.append(rec)
    return {"base_rss_mib": round(base / 1024, 1), "stages": stages}


def measure_inproc(sc: Scenario) -> dict[str, Any]:
    p = sc.params
    cmd = [
        *pinned(SERVER_CPU),
        str(env_python()),
        str(HERE / "send_cost.py"),
        "--subscribers",
        str(p["subscribers"]),
        "--events",
        str(p["events"]),
        "--rounds",
        str(p["rounds"]),
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(HERE / "peers")]))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    prioritise(proc.pid)
    try:
        stdout, _ = proc.communicate(timeout=300)
    finally:
        stop(proc)
    if proc.returncode:
        raise RuntimeError(f"send_cost.py exited with {proc.returncode}")
    return json.loads(stdout)


def run_one(
    sc: Scenario, peer: Peer, log: Path, redis: RedisServer | None = None
) -> tuple[dict[str, Any], str, float]:
    """One run of a scenario against a fresh server: record, summary line, time."""
    t0 = time.monotonic()
    try:
        if sc.kind == "stream":
            rec = measure_stream(sc, peer, log, redis)
            lat = rec["latency_ms"] or {}
            late = rec["lateness_ms"] or {}
            p99 = (
                f"p99 lateness {late.get('p99', 0):,.0f}"
                if sc.rate
                else (f"p99 {lat.get('p99', 0):,.0f}")
            )
            line = (
                f"{rec['events_per_s']:>10,.0f} ev/s  "
                f"delivered {rec['delivered_pct']:5.1f} %  "
                f"p50 {lat.get('p50', 0):,.1f} ms  {p99} ms"
                f"  client CPU {rec['client_cpu_pct']:.0f} %"
                f"  server CPU {rec.get('server_cpu_pct', 0):.0f} %"
            )
            if peer.workers:
                line += (
                    f"\n    every event once, in order: {rec['exact']:,} of "
                    f"{rec['connected']:,} subscribers; events per write "
                    f"{rec['events_per_write']}; per process: connections "
                    f"{rec.get('worker_conns')}, CPU % {rec.get('worker_cpu_pct')}"
                    f" on CPUs {rec.get('worker_cpus')}, publisher in process "
                    f"{rec.get('publisher_worker')}"
                )
                if "redis_cpu_pct" in rec:
                    line += f"; redis-server CPU {rec['redis_cpu_pct']:.0f} %"
        else:
            rec = measure_idle(sc, peer, log)
            line = "  ".join(
                f"{s['target']}: held {s['alive']}, "
                f"ka {s['with_keepalive']}, "
                f"{s['rss_kib_per_conn']} KiB/conn"
                for s in rec["stages"]
            )
    except Exception as exc:  # one failed run must not sink the suite
        rec = {"error": repr(exc)}
        line = f"FAILED: {exc!r}"
    return rec, line, time.monotonic() - t0


# -- summarising ---------------------------------------------------------------


def med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarise_stream(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def pick(path: str) -> float | None:
        vals = []
        for r in runs:
            v: Any = r
            for part in path.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            vals.append(v)
        return med(vals)

    return {
        "events_per_s": pick("events_per_s"),
        "delivered_pct": pick("delivered_pct"),
        "undelivered": pick("undelivered"),
        "gaps": pick("gaps"),
        "complete_runs": sum(1 for r in runs if r.get("complete")),
        "latency_p50_ms": pick("latency_ms.p50"),
        "latency_p99_ms": pick("latency_ms.p99"),
        "lateness_p50_ms": pick("lateness_ms.p50"),
        "lateness_p99_ms": pick("lateness_ms.p99"),
        "client_cpu_pct": pick("client_cpu_pct"),
        "server_cpu_pct": pick("server_cpu_pct"),
        "span_s": pick("span_s"),
        "events_per_write": pick("events_per_write"),
        "runs": len(runs),
    } | summarise_workers(runs)


def summarise_workers(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-process figures of a workers peer (medians per process)."""
    if not any("worker_cpu_pct" in r for r in runs):
        return {}

    def each(key: str) -> list[float | None] | None:
        lists = [r[key] for r in runs if r.get(key) is not None]
        if not lists:
            return None
        return [med([x[i] for x in lists if len(x) > i]) for i in range(len(lists[0]))]

    return {
        "connected": med([r.get("connected") for r in runs]),
        "exact": med([r.get("exact") for r in runs]),
        "exact_runs": sum(
            1 for r in runs if r.get("exact") == r.get("connected") and r.get("exact")
        ),
        "worker_conns": each("worker_conns"),
        "worker_cpu_pct": each("worker_cpu_pct"),
        "worker_cpus": runs[0].get("worker_cpus"),
        "publisher_worker": [r.get("publisher_worker") for r in runs],
        "redis_cpu_pct": med([r.get("redis_cpu_pct") for r in runs]),
    }


def summarise_inproc(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(runs[0])
    out["runs"] = len(runs)
    out["ns_per_subscriber"] = {
        loop: med([r["ns_per_subscriber"][loop] for r in runs])
        for loop in runs[0]["ns_per_subscriber"]
    }
    return out


def summarise_idle(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs)}
    nstages = max((len(r["stages"]) for r in runs), default=0)
    for k in range(nstages):
        recs = [r["stages"][k] for r in runs if len(r["stages"]) > k]
        target = recs[0]["target"]
        out[str(target)] = {
            "alive": med([r["alive"] for r in recs]),
            "with_keepalive": med([r["with_keepalive"] for r in recs]),
            "failed": med([r["failed"] for r in recs]),
            "rss_kib_per_conn": med([r["rss_kib_per_conn"] for r in recs]),
            "rss_mib": med([r["rss_mib"] for r in recs]),
            "connect_s": med([r["connect_s"] for r in recs]),
        }
    return out


def fmt(v: float | None, spec: str = ",.0f") -> str:
    return "–" if v is None else format(v, spec)


def ratio(a: float | None, b: float | None, lower_is_better: bool = False) -> str:
    if not a or not b:
        return "–"
    r = b / a if lower_is_better else a / b
    return f"{r:.2f}×" if r < 10 else f"{r:.1f}×"


def is_trio_sse(peer: str) -> bool:
    return peer.startswith(TRIO_SSE)


def tables(summary: dict[str, Any], scenarios: dict[str, Scenario]) -> str:
    lines: list[str] = []
    vs = f"÷ {BASELINE}"
    for name, sc in scenarios.items():
        if name not in summary:
            continue
        data = summary[name]
        lines.append(f"\n### {name}: {sc.about}\n")
        if sc.group == "redis":
            lines += workers_table(sc, data)
        elif sc.kind == "stream":
            base = data.get(BASELINE, {}).get("events_per_s")
            late = "p99 lateness ms" if sc.rate else "p99 latency ms"
            lines.append(
                f"| server | events/s | {vs} | events/s per connection | "
                f"delivered | p50 latency ms | {late} | server CPU | client CPU |"
            )
            lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for peer, s in data.items():
                p99 = s["lateness_p99_ms"] if sc.rate else s["latency_p99_ms"]
                per = s["events_per_s"] / sc.conns if s["events_per_s"] else None
                lines.append(
                    f"| {peer} | {fmt(s['events_per_s'])} | "
                    f"{ratio(s['events_per_s'], base)} | {fmt(per, ',.1f')} | "
                    f"{fmt(s['delivered_pct'], '.1f')} % | "
                    f"{fmt(s['latency_p50_ms'], ',.1f')} | {fmt(p99, ',.1f')} | "
                    f"{fmt(s['server_cpu_pct'], '.0f')} % | "
                    f"{fmt(s['client_cpu_pct'], '.0f')} % |"
                )
        elif sc.kind == "idle":
            targets = sorted(
                {t for s in data.values() for t in s if t != "runs"}, key=int
            )
            lines.append(
                "| server | connections | held | with keep-alive | "
                f"RSS KiB/conn | {vs} | RSS MiB |"
            )
            lines.append("|---|---:|---:|---:|---:|---:|---:|")
            for t in targets:
                base = data.get(BASELINE, {}).get(t, {}).get("rss_kib_per_conn")
                for peer, s in data.items():
                    st = s.get(t)
                    if not st:
                        continue
                    per = st["rss_kib_per_conn"]
                    lines.append(
                        f"| {peer} | {int(t):,} | {fmt(st['alive'])} | "
                        f"{fmt(st['with_keepalive'])} | {fmt(per, '.1f')} | "
                        f"{ratio(per, base)} | {fmt(st['rss_mib'], '.0f')} |"
                    )
        elif sc.kind == "inproc":
            costs = data["ns_per_subscriber"]
            base = costs.get("trio_sse Broadcaster.send")
            lines.append("| fan-out loop | ns per subscriber | cost ÷ trio_sse's |")
            lines.append("|---|---:|---:|")
            for loop, ns in costs.items():
                lines.append(f"| {loop} | {ns:.0f} | {ratio(ns, base)} |")
    return "\n".join(lines) + "\n"


def workers_table(sc: Scenario, data: dict[str, Any]) -> list[str]:
    """The across-cores table: one row per setup, then the ratios."""
    base = data.get(REDIS_BASE, {}).get("events_per_s")
    late = "p99 lateness ms" if sc.rate else "p99 latency ms"
    lines = [
        f"| setup | events/s | ÷ {REDIS_BASE} | events/s per connection | "
        f"every event once, in order | p50 latency ms | {late} | "
        "events per write | connections per process | CPU per process | "
        "redis-server CPU | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for peer, s in data.items():
        p99 = s["lateness_p99_ms"] if sc.rate else s["latency_p99_ms"]
        per = s["events_per_s"] / sc.conns if s["events_per_s"] else None
        conns = s.get("worker_conns") or []
        cpus = []
        publishers = set(s.get("publisher_worker") or [])
        for i, pct in enumerate(s.get("worker_cpu_pct") or []):
            cpu = (s.get("worker_cpus") or [])[i] if s.get("worker_cpus") else "?"
            mark = ", publisher" if publishers == {i} and len(conns) > 1 else ""
            cpus.append(f"{fmt(pct, '.0f')} % (CPU {cpu}{mark})")
        redis_cpu = s.get("redis_cpu_pct")
        lines.append(
            f"| {peer} | {fmt(s['events_per_s'])} | {ratio(s['events_per_s'], base)} | "
            f"{fmt(per, ',.1f')} | {fmt(s.get('exact'))} of "
            f"{fmt(s.get('connected'))} | {fmt(s['latency_p50_ms'], ',.1f')} | "
            f"{fmt(p99, ',.1f')} | {fmt(s.get('events_per_write'), '.2f')} | "
            f"{' + '.join(fmt(c) for c in conns) or '–'} | "
            f"{' + '.join(cpus) or '–'} | "
            f"{'–' if redis_cpu is None else fmt(redis_cpu, '.0f') + ' %'} | "
            f"{fmt(s['client_cpu_pct'], '.0f')} % |"
        )
    lines.append("")
    lines.append(workers_ratios(data))
    return lines


def workers_ratios(data: dict[str, Any]) -> str:
    """2 processes ÷ 1 process, and each Redis setup ÷ the memory backend."""

    def rate(peer: str) -> float | None:
        return data.get(peer, {}).get("events_per_s")

    parts = []
    for a, b in (
        ("redis-2proc", "redis-1proc"),
        ("redis-1proc", "memory-1proc"),
        ("redis-2proc", "memory-1proc"),
    ):
        if rate(a) and rate(b):
            parts.append(f"{a} ÷ {b}: {ratio(rate(a), rate(b))}")
    return "Events/s delivered, " + "; ".join(parts) + "." if parts else ""


# What trio_sse aims for in the real-publisher scenarios, as ratios and
# differences taken in one run (1,000 subscribers, nothing lost).
# KiB per idle connection above hypercorn-bare's in the same run, at 5,000
# connections, before the response rewrite (trio_sse at c923a55: 32.2 - 26.9).
IDLE_EXCESS_KIB_BEFORE = 5.3


def targets(summary: dict[str, Any], scenarios: dict[str, Scenario]) -> str:
    """One line per target and trio_sse peer: the figure, met or not."""

    def stream(scenario: str, peer: str) -> dict[str, Any]:
        return summary.get(scenario, {}).get(peer, {})

    def whole(st: dict[str, Any]) -> bool:
        return (st.get("delivered_pct") or 0) >= 100 and not st.get("gaps")

    peers = sorted({p for sc in summary.values() if isinstance(sc, dict) for p in sc})
    rows = []
    for peer in filter(is_trio_sse, peers):
        for scenario in ("fanout-1k", "burst-100", "many-publishers"):
            st, base = stream(scenario, peer), stream(scenario, BASELINE)
            if st and base.get("events_per_s"):
                r = (st.get("events_per_s") or 0) / base["events_per_s"]
                goal = "≥ 2×" if scenario != "many-publishers" else "(none)"
                met = r >= 2 and whole(st) if goal != "(none)" else None
                rows.append(
                    (peer, f"{scenario}: events/s {vs_name()}", f"{r:.2f}×", goal, met)
                )
        st = stream("paced", peer)
        if st:
            held = (st.get("events_per_s") or 0) / scenarios["paced"].conns
            p99 = st.get("lateness_p99_ms")
            met = held >= 99 and p99 is not None and p99 <= 150 and whole(st)
            rows.append(
                (
                    peer,
                    "paced: events/s held per connection, p99 lateness",
                    f"{held:.0f} ev/s, {fmt(p99, ',.0f')} ms",
                    "100 ev/s, ≤ 150 ms",
                    met,
                )
            )
        st, bare = (
            stream("idle-latency", peer),
            stream("idle-latency", "hypercorn-bare"),
        )
        if st and bare.get("latency_p50_ms") is not None:
            d = (st.get("latency_p50_ms") or 0) - bare["latency_p50_ms"]
            rows.append(
                (
                    peer,
                    "idle-latency: p50 latency − hypercorn-bare's",
                    f"{d:+.2f} ms",
                    "≤ 2 ms",
                    d <= 2 and whole(st),
                )
            )
        idle = summary.get("idle", {})
        mine, bare = idle.get(peer, {}), idle.get("hypercorn-bare", {})
        common = [t for t in mine if t != "runs" and t in bare]
        if common:
            t = max(common, key=int)
            per, floor = (
                mine[t].get("rss_kib_per_conn"),
                bare[t].get("rss_kib_per_conn"),
            )
            if per is not None and floor is not None:
                rows.append(
                    (
                        peer,
                        f"idle: RSS KiB per connection at {int(t):,}, "
                        "over hypercorn-bare's",
                        f"{per:.1f} − {floor:.1f} = {per - floor:+.1f} KiB",
                        f"≤ +{IDLE_EXCESS_KIB_BEFORE:g} KiB",
                        round(per - floor, 1) <= IDLE_EXCESS_KIB_BEFORE,
                    )
                )
    if not rows:
        return ""
    out = [
        "\n### targets\n",
        "| server | figure | measured | target | met |",
        "|---|---|---:|---:|:---:|",
    ]
    for peer, what, value, goal, met in rows:
        mark = "–" if met is None else ("yes" if met else "no")
        out.append(f"| {peer} | {what} | {value} | {goal} | {mark} |")
    return "\n".join(out) + "\n"


def vs_name() -> str:
    return f"÷ {BASELINE}'s"


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    node = shutil.which("node")
    node_v = ""
    if node:
        node_v = subprocess.run(
            [node, "--version"], capture_output=True, text=True
        ).stdout.strip()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node_v,
    }


def revision(tree: Path = REPO) -> str:
    """A checkout's commit, with ``-dirty`` when its trio_sse/ has local edits."""
    git = shutil.which("git")
    if not git:
        return tree.name
    run = subprocess.run
    head = run([git, "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True)
    if head.returncode:
        return tree.name
    dirty = run([git, "diff", "--quiet", "HEAD", "--", "trio_sse"], cwd=tree)
    return head.stdout.decode().strip() + ("-dirty" if dirty.returncode else "")


def trio_sse_origin(peer: Peer) -> str:
    """Where a peer's server imports trio_sse from (checked, not assumed)."""
    env = dict(os.environ, PYTHONPATH=peer.pythonpath())
    code = "import trio_sse; print(trio_sse.__file__)"
    out = subprocess.run(
        [str(env_python()), "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=HERE / "peers",  # as the servers run: not the checkout's root
    )
    return out.stdout.strip() or out.stderr.strip()[-200:]


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in (
        "trio-sse",
        "trio",
        "hypercorn",
        "sse-starlette",
        "starlette",
        "anyio",
        "uvicorn",
        "uvloop",
        "httptools",
        "aiohttp",
        "aiohttp-sse",
        "coredis",
    ):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate_scen = [
        s
        for s in ("fanout-1k", "many-publishers", "burst-100", "paced")
        if s in summary
    ]
    # The latency panel: p99 latency, p99 lateness when paced, and the p50
    # latency of a lone event on an idle server.
    lat_keys = {
        "fanout-1k": "latency_p99_ms",
        "many-publishers": "latency_p99_ms",
        "burst-100": "latency_p99_ms",
        "paced": "lateness_p99_ms",
        "idle-latency": "latency_p50_ms",
    }
    lat_scen = [s for s in lat_keys if s in summary]
    if not lat_scen:
        return
    peers: list[str] = []
    for s in lat_scen:
        for p in summary[s]:
            if p not in peers:
                peers.append(p)
    from matplotlib.patches import Patch

    idle = summary.get("idle", {})
    ncols = 3 if idle else 2
    fig, axes = plt.subplots(
        1, ncols, figsize=(6 * ncols, 5), width_ratios=[4, 5, 2][:ncols]
    )
    handles = []
    width = 0.8 / max(1, len(peers))

    def whole(s: str, peer: str) -> bool:
        return (summary[s].get(peer, {}).get("delivered_pct") or 100) >= 100

    for i, peer in enumerate(peers):
        color = f"C{i}"
        handles.append(Patch(facecolor=color, label=peer))
        for ax, scen, value in (
            (axes[0], rate_scen, lambda s, st: st.get("events_per_s")),
            (axes[1], lat_scen, lambda s, st: st.get(lat_keys[s])),
        ):
            xs = [j + (i - (len(peers) - 1) / 2) * width for j in range(len(scen))]
            ys = [value(s, summary[s].get(peer, {})) or 0 for s in scen]
            bars = ax.bar(xs, ys, width, color=color)
            for bar, s in zip(bars.patches, scen, strict=True):
                bar.set_hatch("" if whole(s, peer) else "//")
    axes[0].set_xticks(range(len(rate_scen)), rate_scen)
    axes[1].set_xticks(
        range(len(lat_scen)),
        [
            f"{s}\n({lat_keys[s].split('_')[0]} {lat_keys[s].split('_')[1]})"
            for s in lat_scen
        ],
    )
    for ax, title in (
        (axes[0], "delivered events/s (higher is better)"),
        (axes[1], "latency or lateness vs schedule, ms (lower is better)"),
    ):
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    if idle:
        colors = {h.get_label(): h.get_facecolor() for h in handles}
        missing = [p for p in idle if p not in colors]
        colors |= {p: f"C{len(peers) + k}" for k, p in enumerate(missing)}
        handles += [Patch(facecolor=colors[p], label=p) for p in missing]
        targets = sorted(
            {t for st in idle.values() for t in st if t != "runs"}, key=int
        )
        names = list(idle)
        w = 0.8 / max(1, len(names))
        for i, peer in enumerate(names):
            xs = [j + (i - (len(names) - 1) / 2) * w for j in range(len(targets))]
            ys = [idle[peer].get(t, {}).get("rss_kib_per_conn") or 0 for t in targets]
            axes[2].bar(xs, ys, w, color=colors.get(peer))
        axes[2].set_xticks(range(len(targets)), [f"{int(t):,} idle" for t in targets])
        axes[2].set_title("RSS per idle connection, KiB (lower is better)", fontsize=10)
        axes[2].grid(axis="y", alpha=0.3)
    handles.append(Patch(facecolor="white", hatch="//", label="time limit hit"))
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8)
    fig.suptitle(
        "SSE fan-out over HTTP with real publishers (a checkpoint before every "
        "event),\nserver on one core, load client on another "
        "(hatched: not everything delivered within the time limit)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def update_doc(block: str, name: str = "results") -> None:
    """Replace the doc's block between ``<!-- NAME:start -->`` and its end."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if not DOC.exists():
        return
    text = DOC.read_text()
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    DOC.write_text(f"{head}{start}\n{block}\n{end}{tail}")


def run_round(
    r: int,
    runs: int,
    scenarios: dict[str, Scenario],
    peers: dict[str, Peer],
    only: set[str] | None,
    quick: bool,
    log: Path,
    raw: dict[str, dict[str, list[Any]]],
    redis: RedisServer | None,
) -> None:
    """Round ``r`` of every scenario and peer; records go into ``raw``."""
    for name, sc in scenarios.items():
        todo = [p for p in scenario_peers(sc, peers, quick) if not only or p in only]
        if sc.kind == "inproc":
            rec = measure_inproc(sc)
            raw.setdefault(name, {}).setdefault("inproc", []).append(rec)
            costs = ", ".join(
                f"{k.split()[0]} {v:.0f}" for k, v in rec["ns_per_subscriber"].items()
            )
            print(f"[{name} run {r + 1}/{runs}] ns/subscriber: {costs}", flush=True)
            continue
        if sc.kind == "idle":
            # Idle servers barely use a CPU: they are measured side by
            # side (each with its own load client), which keeps the
            # mandated 2 x 20 s holds from dominating the run time.
            with concurrent.futures.ThreadPoolExecutor(len(todo) or 1) as pool:
                futures = {
                    pname: pool.submit(run_one, sc, peers[pname], log) for pname in todo
                }
                results = [(pname, f.result()) for pname, f in futures.items()]
        else:  # one after the other, each reported when done
            results = ((p, run_one(sc, peers[p], log, redis)) for p in todo)
        for pname, (rec, line, took) in results:
            raw.setdefault(name, {}).setdefault(pname, []).append(rec)
            print(
                f"[{name} run {r + 1}/{runs}] {pname:<30} {line} ({took:.0f} s)",
                flush=True,
            )


# -- main ----------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="shorter scenarios, fewer peers"
    )
    parser.add_argument("--runs", type=int, default=1, help="runs per figure")
    parser.add_argument(
        "--scenarios",
        help="comma-separated; default: the headline ones (not *-nocheckpoint)",
    )
    parser.add_argument("--peers", help="comma-separated subset")
    parser.add_argument(
        "--variants",
        default="response",
        help="trio_sse responses to measure, comma-separated: response "
        "(bc.response(stream)), cast (bc.response(stream.cast_events(Event))), "
        "gc-always (response, with serve(gc_freeze='always'))",
    )
    parser.add_argument(
        "--trio-sse-tree",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="also measure trio_sse imported from this checkout (repeatable)",
    )
    parser.add_argument(
        "--gc-threshold",
        metavar="G0,G1,G2",
        help="gc.set_threshold() in every Python server (default: Python's)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        help="run servers and load client at this nice level (negative: ahead "
        "of other work on a shared host; needs the privilege)",
    )
    parser.add_argument("--reinstall", action="store_true")
    parser.add_argument("--no-doc", action="store_true", help="leave docs/ alone")
    parser.add_argument(
        "--report", metavar="JSON", help="only redo table, plot and doc from a result"
    )
    opts = parser.parse_args()
    # SIGTERM (and SIGINT, which a shell ignores in background jobs) stop the
    # run through KeyboardInterrupt, so that it stops what it started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    if opts.report:
        ensure_env(False)
        info = json.loads(Path(opts.report).read_text())
        scenarios = make_scenarios(info["quick"])
        scenarios = {k: v for k, v in scenarios.items() if k in info["summary"]}
        report(info, scenarios, write_doc=not opts.no_doc)
        return

    ensure_env(opts.reinstall)
    if opts.gc_threshold:
        os.environ["SSE_BENCH_GC_THRESHOLD"] = opts.gc_threshold
    if opts.nice is not None:
        os.environ["SSE_BENCH_NICE"] = str(opts.nice)
    build_loadgen()
    raise_nofile()
    RESULTS.mkdir(exist_ok=True)
    runs = opts.runs
    trees = [t.resolve() for t in opts.trio_sse_tree]
    peers = make_peers(opts.variants.split(","), trees)
    scenarios = make_scenarios(opts.quick)
    if opts.scenarios:
        wanted = opts.scenarios.split(",")
        unknown = set(wanted) - set(scenarios)
        if unknown:
            raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
        scenarios = {k: v for k, v in scenarios.items() if k in wanted}
    else:
        scenarios = {k: v for k, v in scenarios.items() if v.headline}
    only = set(opts.peers.split(",")) if opts.peers else None
    origins = {
        p: trio_sse_origin(peers[p])
        for p in peers
        if is_trio_sse(p) or peers[p].workers
    }
    for pname, origin in origins.items():
        print(f"{pname}: trio_sse from {origin}", flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc)
    log = RESULTS / f"servers-{stamp:%Y%m%dT%H%M%SZ}.log"
    raw: dict[str, dict[str, list[Any]]] = {}
    t_start = time.monotonic()
    load_start = os.getloadavg()
    services = contextlib.ExitStack()
    redis = None
    if any(sc.group == "redis" for sc in scenarios.values()):
        redis = services.enter_context(redis_server(log))
        print(
            f"redis-server {redis.version} on port {redis.port}, CPU {REDIS_CPU}",
            flush=True,
        )

    # Rounds outermost, so that drift on the host spreads over every peer.
    with services:
        for r in range(runs):
            run_round(r, runs, scenarios, peers, only, opts.quick, log, raw, redis)

    summary: dict[str, Any] = {}
    for name, by_peer in raw.items():
        sc = scenarios[name]
        summary[name] = {}
        for pname, recs in by_peer.items():
            ok = [x for x in recs if "error" not in x]
            if sc.kind == "inproc":
                summary[name] = summarise_inproc(ok)
            elif ok:
                summary[name][pname] = (
                    summarise_stream(ok) if sc.kind == "stream" else summarise_idle(ok)
                )

    elapsed = time.monotonic() - t_start
    info = {
        "date": stamp.isoformat(timespec="seconds"),
        "machine": machine(),
        "redis_server": redis.version if redis is not None else None,
        "versions": versions(),
        "revision": revision(),
        "trio_sse_from": origins,
        "runs": runs,
        "quick": opts.quick,
        "gc_threshold": opts.gc_threshold,
        "nice": opts.nice,
        "loadavg_start_end": [load_start, os.getloadavg()],
        "elapsed_s": round(elapsed, 1),
        "scenarios": {
            k: {
                f: getattr(v, f)
                for f in (
                    "about",
                    "conns",
                    "events",
                    "size",
                    "rate",
                    "publishers",
                    "checkpoint",
                    "timeout",
                )
            }
            for k, v in scenarios.items()
        },
        "peers": {k: v.note for k, v in peers.items()},
        "summary": summary,
        "raw": raw,
    }
    out = RESULTS / f"{stamp:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(info, indent=1))
    (RESULTS / "latest.json").write_text(json.dumps(info, indent=1))

    print(f"results: {out.relative_to(REPO)}")
    report(info, scenarios, write_doc=not opts.no_doc)


def report(info: dict[str, Any], scenarios: dict[str, Scenario], write_doc: bool):
    """Print the tables; write latest.md, and the plot and doc block if asked."""
    m = info["machine"]
    runs = info["runs"]
    header = (
        f"Run of {info['date']} ({'quick, ' if info['quick'] else ''}"
        f"{'one run' if runs == 1 else f'median of {runs} runs'} per figure, "
        f"{info['elapsed_s'] / 60:.1f} min): {m['nproc']} × {m['cpu']}, "
        f"Linux {m['kernel']}, Python {m['python']}, Node {m['node'] or '–'}; "
        f"trio_sse at {info.get('revision', 'unknown')}.\n"
    )
    summary = info["summary"]
    redis = {k: v for k, v in scenarios.items() if v.group == "redis"}
    others = {k: v for k, v in scenarios.items() if k not in redis}
    main_text = tables(summary, others) + targets(summary, others)
    redis_head = ""
    if any(k in summary for k in redis):
        load = info["loadavg_start_end"]
        v = info["versions"]
        redis_head = (
            f"\nredis-server {info.get('redis_server', '?')}, coredis "
            f"{v.get('coredis', '?')}, hypercorn {v.get('hypercorn', '?')}; "
            f"load average (1 min) {load[0][0]:.1f} at the start, "
            f"{load[1][0]:.1f} at the end; niceness {info.get('nice')}.\n"
        )
    redis_text = redis_head + tables(summary, redis)
    text = header + main_text + redis_text
    (RESULTS / "latest.md").write_text(text)
    print("\n" + text)
    if write_doc:
        # A block is rewritten only by a run that measured its scenarios.
        if any(k in summary for k in others):
            plot(summary, PLOT)
            update_doc(header + main_text)
            print(f"plot: {PLOT.relative_to(REPO)}")
        # Each across-cores scenario has its own block, rewritten by a run
        # that measured it: on a shared host they may come from two runs.
        for name, sc in redis.items():
            if name in summary:
                block = header + redis_head + tables(summary, {name: sc})
                update_doc(block, name)


if __name__ == "__main__":
    main()
