#!/usr/bin/env python3
"""Fan-out benchmark: trio_sse against other Server-Sent Events servers.

One command builds, runs and reports::

    python benchmarks/run.py            # full run: every figure the median of 3
    python benchmarks/run.py --quick    # 1 run, shorter scenarios

It creates (or reuses) the virtualenv ``benchmarks/.env`` with the peers,
matplotlib and trio_sse installed from this checkout (``pip install -e``),
builds the C load client ``loadgen.c`` with ``gcc -O2`` into
``benchmarks/.build/``, then for every scenario and peer starts a fresh
server pinned to one CPU (``taskset -c 0``) and the load client pinned to the
other (``taskset -c 1``). It prints a table, writes
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
TRIO_SSE = "trio_sse"


# -- environment ---------------------------------------------------------------


def env_python() -> Path:
    return ENV / "bin" / "python"


def ensure_env(reinstall: bool) -> None:
    """Create or update benchmarks/.env, then re-run this script inside it."""
    stamp = ENV / ".installed"
    digest = hashlib.sha256(
        REQUIREMENTS.read_bytes() + (REPO / "pyproject.toml").read_bytes()
    ).hexdigest()
    if not env_python().exists():
        print(f"creating {ENV.relative_to(REPO)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(ENV)], check=True)
    if reinstall or not stamp.exists() or stamp.read_text() != digest:
        pip = [str(env_python()), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
        subprocess.run([*pip, "-e", str(REPO)], check=True)
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

    def command(self, port: int, buffer: int, keep_alive: float) -> list[str]:
        extra = ["--port", str(port), "--keep-alive", str(keep_alive)]
        if not self.argv[0].endswith("node"):
            extra += ["--buffer", str(buffer)]
        return ["taskset", "-c", SERVER_CPU, *self.argv, *extra]


def make_peers() -> dict[str, Peer]:
    py = str(env_python())
    peers = HERE / "peers"
    starlette = str(peers / "sse_starlette_app.py")
    node = shutil.which("node")
    all_peers = [
        Peer(
            TRIO_SSE,
            (py, str(HERE / "trio_sse_app.py")),
            "Broadcaster + bc.response, trio_sse.serve (Hypercorn trio worker)",
        ),
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
    return {p.name: p for p in all_peers}


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
    timeout: float = 30.0
    stages: str = ""
    buffer: int = 1024
    keep_alive: float = 15.0
    about: str = ""
    params: dict[str, Any] = field(default_factory=dict)


ALL_STREAM = (
    TRIO_SSE,
    "sse-starlette/uvicorn",
    "sse-starlette/hypercorn-trio",
    "aiohttp-sse",
    "hypercorn-bare",
    "raw-trio",
    "node-http",
)
LIBS = (TRIO_SSE, "sse-starlette/uvicorn", "sse-starlette/hypercorn-trio")


def make_scenarios(quick: bool) -> dict[str, Scenario]:
    cap = 10.0
    scenarios = [
        Scenario(
            "fanout-1k",
            "stream",
            ALL_STREAM,
            conns=1000,
            events=1000,
            size=64,
            timeout=cap,
            buffer=1024,
            about="1,000 connections, 1,000 events of 64 B published at once",
        ),
        Scenario(
            "paced",
            "stream",
            ALL_STREAM,
            conns=1000,
            events=500,
            size=256,
            rate=100.0,
            timeout=cap,
            buffer=1024,
            about="1,000 connections, 100 events/s for 5 s, 256 B",
        ),
        Scenario(
            "burst-100",
            "stream",
            (*LIBS, "node-http"),
            conns=100,
            events=20000,
            size=64,
            timeout=cap,
            buffer=20000,
            about="100 connections, 20,000 events of 64 B published at once",
        ),
        Scenario(
            "idle",
            "idle",
            (*LIBS, "hypercorn-bare"),
            stages="5000:20,10000:20" if not quick else "5000:20",
            about="idle connections held 20 s (keep-alive every 15 s): "
            "5,000 then 10,000",
        ),
        Scenario(
            "send-cost",
            "inproc",
            (),
            params={"subscribers": 1000, "events": 100, "rounds": 9},
            about="in-process send() per subscriber, 1,000 subscribers, no HTTP",
        ),
    ]
    return {s.name: s for s in scenarios}


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


@contextlib.contextmanager
def running_server(
    peer: Peer, buffer: int, keep_alive: float, log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    # An outer PYTHONPATH comes after the peers' directory: it lets a trial
    # copy of a package be measured without installing it.
    path = [str(HERE / "peers"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), PYTHONUNBUFFERED="1")
    with log.open("ab") as err:
        proc = subprocess.Popen(
            peer.command(port, buffer, keep_alive),
            cwd=HERE / "peers",
            stdout=err,
            stderr=err,
            env=env,
            start_new_session=True,
        )
        try:
            wait_port(port, proc, 30)
            time.sleep(0.3)
            yield proc, port
        finally:
            stop(proc)


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_loadgen(args: list[str], server: subprocess.Popen[bytes], wall_cap: float):
    """Run the load client; sample the server at its '#' markers."""
    cmd = ["taskset", "-c", CLIENT_CPU, str(LOADGEN), *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    records: list[dict[str, Any]] = []
    marks: list[tuple[str, float, float, int]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic()
            try:
                sample = (now, proc_cpu_s(server.pid), proc_rss_kib(server.pid))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                sample = (now, 0.0, 0)
            if line.startswith("#"):
                marks.append((line[1:].strip(), *sample))
            elif line.strip():
                record = json.loads(line)
                record["_sample"] = sample
                records.append(record)
        proc.wait(wall_cap)
    finally:
        stop(proc)
    return records, marks


# -- measuring -----------------------------------------------------------------


def measure_stream(sc: Scenario, peer: Peer, log: Path) -> dict[str, Any]:
    with running_server(peer, sc.buffer, sc.keep_alive, log) as (server, port):
        query = f"/publish?n={sc.events}&size={sc.size}&rate={sc.rate:g}"
        args = [
            "--port",
            str(port),
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
        records, marks = run_loadgen(args, server, sc.timeout + 150)
        rss = proc_rss_kib(server.pid)
    if not records:
        raise RuntimeError("load client printed no result")
    rec = records[-1]
    start = next((m for m in marks if m[0] == "publish"), None)
    end = rec.pop("_sample")
    if start is not None and end[0] > start[1]:
        rec["server_cpu_pct"] = round(
            100 * (end[1] - start[2]) / (end[0] - start[1]), 1
        )
    rec["server_rss_mib_end"] = round(rss / 1024, 1)
    rec["delivered_pct"] = (
        round(100 * rec["delivered"] / rec["expected"], 2) if rec["expected"] else 0
    )
    return rec


def measure_idle(sc: Scenario, peer: Peer, log: Path) -> dict[str, Any]:
    with running_server(peer, 128, sc.keep_alive, log) as (server, port):
        time.sleep(0.5)
        base = proc_rss_kib(server.pid)
        args = ["--port", str(port), "--stages", sc.stages]
        records, _ = run_loadgen(args, server, 400)
    stages = []
    for rec in records:
        _, _, rss = rec.pop("_sample")
        alive = rec["alive"]
        rec["rss_mib"] = round(rss / 1024, 1)
        rec["rss_kib_per_conn"] = round((rss - base) / alive, 2) if alive else None
        stages.append(rec)
    return {"base_rss_mib": round(base / 1024, 1), "stages": stages}


def measure_inproc(sc: Scenario) -> dict[str, Any]:
    p = sc.params
    cmd = [
        "taskset",
        "-c",
        SERVER_CPU,
        str(env_python()),
        str(HERE / "send_cost.py"),
        "--subscribers",
        str(p["subscribers"]),
        "--events",
        str(p["events"]),
        "--rounds",
        str(p["rounds"]),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout)


def run_one(sc: Scenario, peer: Peer, log: Path) -> tuple[dict[str, Any], str, float]:
    """One run of a scenario against a fresh server: record, summary line, time."""
    t0 = time.monotonic()
    try:
        if sc.kind == "stream":
            rec = measure_stream(sc, peer, log)
            p99 = (rec["latency_ms"] or {}).get("p99", 0)
            line = (
                f"{rec['events_per_s']:>10,.0f} ev/s  "
                f"delivered {rec['delivered_pct']:5.1f} %  "
                f"p99 {p99:,.0f} ms"
                f"  client CPU {rec['client_cpu_pct']:.0f} %"
                f"  server CPU {rec.get('server_cpu_pct', 0):.0f} %"
            )
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
        "runs": len(runs),
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


def tables(summary: dict[str, Any], scenarios: dict[str, Scenario]) -> str:
    lines: list[str] = []
    for name, sc in scenarios.items():
        if name not in summary:
            continue
        data = summary[name]
        lines.append(f"\n### {name}: {sc.about}\n")
        if sc.kind == "stream":
            base = data.get(TRIO_SSE, {}).get("events_per_s")
            late = "p99 lateness ms" if sc.rate else "p99 latency ms"
            lines.append(
                f"| server | events/s | trio_sse ÷ server | delivered | "
                f"p50 latency ms | {late} | server CPU | client CPU |"
            )
            lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
            for peer, s in data.items():
                p99 = s["lateness_p99_ms"] if sc.rate else s["latency_p99_ms"]
                lines.append(
                    f"| {peer} | {fmt(s['events_per_s'])} | "
                    f"{'–' if peer == TRIO_SSE else ratio(base, s['events_per_s'])} | "
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
                "RSS KiB/conn | RSS ÷ trio_sse's | RSS MiB |"
            )
            lines.append("|---|---:|---:|---:|---:|---:|---:|")
            for t in targets:
                base = data.get(TRIO_SSE, {}).get(t, {}).get("rss_kib_per_conn")
                for peer, s in data.items():
                    st = s.get(t)
                    if not st:
                        continue
                    per = st["rss_kib_per_conn"]
                    lines.append(
                        f"| {peer} | {int(t):,} | {fmt(st['alive'])} | "
                        f"{fmt(st['with_keepalive'])} | {fmt(per, '.1f')} | "
                        f"{'–' if peer == TRIO_SSE else ratio(per, base)} | "
                        f"{fmt(st['rss_mib'], '.0f')} |"
                    )
        elif sc.kind == "inproc":
            costs = data["ns_per_subscriber"]
            base = costs.get("trio_sse Broadcaster.send")
            lines.append("| fan-out loop | ns per subscriber | cost ÷ trio_sse's |")
            lines.append("|---|---:|---:|")
            for loop, ns in costs.items():
                lines.append(f"| {loop} | {ns:.0f} | {ratio(ns, base)} |")
    return "\n".join(lines) + "\n"


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


def revision() -> str:
    """The checkout's commit, with ``-dirty`` when trio_sse/ has local edits."""
    git = shutil.which("git")
    if not git:
        return "unknown"
    run = subprocess.run
    head = run([git, "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True)
    dirty = run([git, "diff", "--quiet", "HEAD", "--", "trio_sse"], cwd=REPO)
    return head.stdout.decode().strip() + ("-dirty" if dirty.returncode else "")


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
    ):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = [s for s in ("fanout-1k", "burst-100", "paced") if s in summary]
    if not scen:
        return
    peers: list[str] = []
    for s in scen:
        for p in summary[s]:
            if p not in peers:
                peers.append(p)
    from matplotlib.patches import Patch

    idle = summary.get("idle", {})
    ncols = 3 if idle else 2
    fig, axes = plt.subplots(
        1, ncols, figsize=(5.5 * ncols, 4.8), width_ratios=[3, 3, 2][:ncols]
    )
    handles = []
    width = 0.8 / max(1, len(peers))
    for i, peer in enumerate(peers):
        xs = [j + (i - (len(peers) - 1) / 2) * width for j in range(len(scen))]
        rates = [summary[s].get(peer, {}).get("events_per_s") or 0 for s in scen]
        p99 = []
        for s in scen:
            st = summary[s].get(peer, {})
            key = "lateness_p99_ms" if s == "paced" else "latency_p99_ms"
            p99.append(st.get(key) or 0)
        capped = [
            (summary[s].get(peer, {}).get("delivered_pct") or 100) < 100 for s in scen
        ]
        hatch = ["//" if c else "" for c in capped]
        bars = axes[0].bar(xs, rates, width)
        color = bars.patches[0].get_facecolor() if bars.patches else None
        handles.append(Patch(facecolor=color, label=peer))
        for bar, h in zip(bars.patches, hatch, strict=True):
            bar.set_hatch(h)
        for bar, h in zip(
            axes[1].bar(xs, p99, width, color=color).patches, hatch, strict=True
        ):
            bar.set_hatch(h)
    for ax, title in (
        (axes[0], "delivered events/s (higher is better)"),
        (axes[1], "p99 latency ms; paced: p99 lateness (lower is better)"),
    ):
        ax.set_xticks(range(len(scen)), scen)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    if idle:
        colors = {h.get_label(): h.get_facecolor() for h in handles}
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
    axes[0].legend(handles=handles, fontsize=8)
    fig.suptitle(
        "SSE fan-out over HTTP, server on one core, load client on another\n"
        "(hatched: not everything delivered within the time limit)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def update_doc(block: str) -> None:
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if not DOC.exists():
        return
    text = DOC.read_text()
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    DOC.write_text(f"{head}{start}\n{block}\n{end}{tail}")


# -- main ----------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run, fewer scenarios")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3, quick 1)")
    parser.add_argument("--scenarios", help="comma-separated subset")
    parser.add_argument("--peers", help="comma-separated subset")
    parser.add_argument(
        "--gc-threshold",
        metavar="G0,G1,G2",
        help="gc.set_threshold() in every Python server (default: Python's)",
    )
    parser.add_argument("--reinstall", action="store_true")
    parser.add_argument("--no-doc", action="store_true", help="leave docs/ alone")
    parser.add_argument(
        "--report", metavar="JSON", help="only redo table, plot and doc from a result"
    )
    opts = parser.parse_args()

    if opts.report:
        ensure_env(False)
        info = json.loads(Path(opts.report).read_text())
        scenarios = make_scenarios(info["quick"])
        report(info, scenarios, write_doc=not opts.no_doc)
        return

    ensure_env(opts.reinstall)
    if opts.gc_threshold:
        os.environ["SSE_BENCH_GC_THRESHOLD"] = opts.gc_threshold
    build_loadgen()
    raise_nofile()
    RESULTS.mkdir(exist_ok=True)
    runs = opts.runs or (1 if opts.quick else 3)
    peers = make_peers()
    scenarios = make_scenarios(opts.quick)
    wanted = opts.scenarios.split(",") if opts.scenarios else None
    if wanted is None and opts.quick:
        wanted = ["fanout-1k", "paced", "idle", "send-cost"]
    if wanted:
        scenarios = {k: v for k, v in scenarios.items() if k in wanted}
    only = set(opts.peers.split(",")) if opts.peers else None
    stamp = datetime.datetime.now(datetime.timezone.utc)
    log = RESULTS / f"servers-{stamp:%Y%m%dT%H%M%SZ}.log"
    raw: dict[str, dict[str, list[Any]]] = {}
    t_start = time.monotonic()

    # Rounds outermost, so that drift on the host spreads over every peer.
    for r in range(runs):
        for name, sc in scenarios.items():
            todo = [p for p in sc.peers if p in peers and (not only or p in only)]
            if sc.kind == "inproc":
                rec = measure_inproc(sc)
                raw.setdefault(name, {}).setdefault("inproc", []).append(rec)
                costs = ", ".join(
                    f"{k.split()[0]} {v:.0f}"
                    for k, v in rec["ns_per_subscriber"].items()
                )
                print(f"[{name} run {r + 1}/{runs}] ns/subscriber: {costs}", flush=True)
                continue
            if sc.kind == "idle":
                # Idle servers barely use a CPU: they are measured side by
                # side (each with its own load client), which keeps the
                # mandated 2 x 20 s holds from dominating the run time.
                with concurrent.futures.ThreadPoolExecutor(len(todo) or 1) as pool:
                    futures = {
                        pname: pool.submit(run_one, sc, peers[pname], log)
                        for pname in todo
                    }
                    results = {pname: f.result() for pname, f in futures.items()}
            else:
                results = {pname: run_one(sc, peers[pname], log) for pname in todo}
            for pname, (rec, line, took) in results.items():
                raw.setdefault(name, {}).setdefault(pname, []).append(rec)
                print(
                    f"[{name} run {r + 1}/{runs}] {pname:<30} {line} ({took:.0f} s)",
                    flush=True,
                )

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
        "versions": versions(),
        "revision": revision(),
        "runs": runs,
        "quick": opts.quick,
        "gc_threshold": opts.gc_threshold,
        "elapsed_s": round(elapsed, 1),
        "scenarios": {
            k: {f: getattr(v, f) for f in ("about", "conns", "events", "size", "rate")}
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
        f"median of {runs} run{'s' if runs > 1 else ''} per figure, "
        f"{info['elapsed_s'] / 60:.1f} min): {m['nproc']} × {m['cpu']}, "
        f"Linux {m['kernel']}, Python {m['python']}, Node {m['node'] or '–'}; "
        f"trio_sse at {info.get('revision', 'unknown')}.\n"
    )
    text = header + tables(info["summary"], scenarios)
    (RESULTS / "latest.md").write_text(text)
    print("\n" + text)
    if write_doc:
        plot(info["summary"], PLOT)
        update_doc(text)
        print(f"plot: {PLOT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
