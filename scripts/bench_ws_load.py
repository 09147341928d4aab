"""Websocket fan-out under load: many clients, some of which never read (loopback only).

    python scripts/bench_ws_load.py [--clients 500] [--stalled 50] [--rate-hz 20] [--seconds 20]

Three runs, each on a fresh server: one client; ``--clients`` clients of
which ``--stalled`` never read; and the healthy ones alone (which tells the
cost of many clients apart from the cost of the stalled ones). The server is
the real ``WebsocketServer`` with the default ``ServerConfig`` (what
``listen --serve`` starts), in this process. A producer task on the server's
event loop publishes realistic events (``candidates``, ``sounds_like``,
``now_playing``, ``status`` in turn, with the payload sizes the recognizer
produces) straight into the broadcaster at a fixed rate, ``--rate-hz``
(default 20/s: more than three times what the recognizer emits at its
shortest hop of 0.5 s, about 6/s).

The clients run in ``--workers`` child processes. A stalled client opens its
socket with a 4 KiB receive buffer, completes the handshake and then stops
reading at the transport level, so the server's sends really back up in TCP.
A loopback socket still buffers about 3 MB in the kernel, which realistic
events (a few hundred bytes each after permessage-deflate) would take many
minutes to fill, so during the warm-up the bench offers big incompressible
filler messages to the stalled clients' queues only (the healthy clients
never see them) until the server has flagged each of them slow. Keepalive
pings are off unless ``--keepalive``: with the default 20 s pings the server
closes a stalled client (code 1011) within 40 s, and the point here is to
measure while 50 clients are backed up and dropping. Healthy clients offer
permessage-deflate, as browsers do; stalled ones do not.

Figures:

- **healthy delay**: for every event a healthy client receives, its receive
  time minus the envelope's ``ts`` (set when the event was published);
  p50/p99/max over all healthy clients, measured for ``--seconds`` after a
  warm-up that lasts until every stalled client has overflowed its queue and
  been flagged slow (at least ``--warmup-s``, at most 90 s);
- **missing**: events published in the measured span that some healthy
  client never received (must be 0);
- **server fan-out**: from publish until every healthy client's relay has
  handed the event to its socket; the rest of the delay is the kernel and
  the client processes, which share this machine's cores with the server;
- **recognizer side**: how long ``Broadcaster.publish`` takes (the live loop
  calls it inline) and how late the producer's ticks run (the fan-out shares
  the loop with the live consumer, so that lateness is what recognition
  would see);
- **stalled**: how many the server flagged slow or closed, and messages dropped.

Target: healthy p99 delay at most 50 ms above the one-client run. Prints the
figures and writes ``bench/ws-load-<commit>-<rate>hz[-nocompress].json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from provenance import git_commit
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from synesthete.clients.protocol import envelope
from synesthete.clients.server import ServerConfig, WebsocketServer
from synesthete.events import (
    Candidates,
    CandidateScore,
    Event,
    NowPlaying,
    SoundsLike,
    Status,
    TrackInfo,
)

ROOT = Path(__file__).resolve().parents[1]
STALLED_RCVBUF_BYTES = 4096
MAX_WARMUP_S = 90.0
FILLER_PER_TICK = 8
FANOUT_POLL_S = 0.002
EVENT_TYPES = ("candidates", "sounds_like", "now_playing", "status")


# ---------------------------------------------------------------------------
# Events with the recognizer's shapes and sizes


def _track(n: int) -> TrackInfo:
    return TrackInfo(
        id=n,
        path=f"/home/dj/Music/Artist {n % 17}/Album {n % 5}/{n:02d} Some Track Title {n}.flac",
        title=f"Some Track Title {n}",
        artist=f"Artist {n % 17}",
        album=f"Album {n % 5}",
        duration_s=180.0 + n,
    )


def make_event(n: int, *, t: float) -> Event:
    """Event ``n`` of a cycle like one window's output (candidates, sounds_like, ...)."""
    kind = EVENT_TYPES[n % len(EVENT_TYPES)]
    base = (n // 4) % 40
    if kind == "candidates":
        return Candidates(
            file="mic",
            t=t,
            candidates=tuple(
                CandidateScore(
                    track=_track(base + k),
                    frechet=0.21 + 0.05 * k,
                    min_p2p=0.18 + 0.04 * k,
                    offset_s=61.25 + k,
                    confidence=max(0.0, 0.93 - 0.2 * k),
                )
                for k in range(5)
            ),
        )
    if kind == "sounds_like":
        return SoundsLike(
            file="mic", t=t, tracks=tuple((_track(base + 10 + k), 0.3 + 0.01 * k) for k in range(5))
        )
    if kind == "now_playing":
        return NowPlaying(file="mic", t=t, track=_track(base), offset_s=61.25 + t, confidence=0.93)
    return Status(file="mic", t=t, level_dbfs=-11.5, xruns=0, latency_ms=7.3, clients=0)


# ---------------------------------------------------------------------------
# Client worker (a child process)


async def _stalled_client(url: str, port: int) -> ClientConnection:
    """A client that completes the handshake, then never reads a byte."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Set before connect, so the advertised TCP window stays tiny.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF_BYTES)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    ws = await connect(
        url + "?stalled=1", sock=sock, max_queue=1, open_timeout=60, compression=None
    )
    ws.transport.pause_reading()
    return ws


async def _read(ws: ClientConnection, out: list[tuple[float, float, float]]) -> None:
    """Note (stream t, envelope ts, receive time) of every event frame."""
    try:
        async for frame in ws:
            received = time.time()
            message = json.loads(frame)
            if message["type"] in EVENT_TYPES:
                out.append((message["t"], message["ts"], received))
    except ConnectionClosed:
        pass


async def worker(url: str, port: int, healthy: int, stalled: int, out_path: Path) -> None:
    stalled_ws = [await _stalled_client(url, port) for _ in range(stalled)]
    records: list[list[tuple[float, float, float]]] = [[] for _ in range(healthy)]
    healthy_ws: list[ClientConnection] = []
    readers = []
    for n in range(healthy):
        ws = await connect(url, open_timeout=60, close_timeout=2)
        healthy_ws.append(ws)
        readers.append(asyncio.create_task(_read(ws, records[n])))
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # "stop" (or EOF) from the parent
    for ws in stalled_ws:
        ws.transport.abort()
    await asyncio.gather(*(ws.close() for ws in healthy_ws), return_exceptions=True)
    await asyncio.gather(*readers)
    out_path.write_text(json.dumps({"healthy": records}))


# ---------------------------------------------------------------------------
# The server side and one measured run


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 2) if values else float("nan")


async def measure(
    *,
    clients: int,
    stalled: int,
    rate_hz: float,
    seconds: float,
    warmup_s: float,
    workers: int,
    keepalive: bool,
    compression: bool,
) -> dict[str, Any]:
    healthy = clients - stalled
    config = ServerConfig(
        port=0, ping_interval_s=20.0 if keepalive else None, compression=compression
    )
    async with WebsocketServer(config=config) as server:
        broadcaster = server.broadcaster
        n_workers = max(1, min(workers, clients))
        work = Path(tempfile.mkdtemp(prefix="synesthete-wsload-"))
        procs = []
        for w in range(n_workers):
            share_h = healthy // n_workers + (1 if w < healthy % n_workers else 0)
            share_s = stalled // n_workers + (1 if w < stalled % n_workers else 0)
            procs.append(
                (
                    subprocess.Popen(
                        [
                            sys.executable,
                            __file__,
                            "--worker",
                            server.url,
                            str(server.port),
                            str(share_h),
                            str(share_s),
                            str(work / f"worker-{w}.json"),
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    ),
                    work / f"worker-{w}.json",
                )
            )
        loop = asyncio.get_running_loop()
        connect_started = time.perf_counter()
        for proc, _ in procs:
            assert proc.stdout is not None
            line = await loop.run_in_executor(None, proc.stdout.readline)
            if line.strip() != "ready":
                raise SystemExit(f"bench_ws_load: a client worker failed ({line!r})")
        connect_s = time.perf_counter() - connect_started
        connected = len(broadcaster.clients)

        publish_ms: list[float] = []
        late_ms: list[float] = []
        fanout_ms: list[float] = []
        # (stream t, publish time) of events some healthy client's relay still holds
        pending: list[tuple[float, float]] = []

        watcher_cpu_s = [0.0]  # the watcher's own CPU, left out of the server's figure

        async def watch_fanout() -> None:
            """Server side: when each event has left every healthy client's queue."""
            healthy_clients = [
                c for c in broadcaster.clients if "stalled" not in c.connection.request.path
            ]
            while True:
                await asyncio.sleep(FANOUT_POLL_S)
                if not pending:
                    continue
                cpu_started = time.process_time()
                queued = {item.message.get("t") for c in healthy_clients for item in c.queue}
                done_at = time.perf_counter()
                while pending and pending[0][0] not in queued:
                    fanout_ms.append((done_at - pending.pop(0)[1]) * 1000.0)
                watcher_cpu_s[0] += time.process_time() - cpu_started

        watcher = asyncio.create_task(watch_fanout())
        measured: set[float] = set()  # stream t of each measured event: unique per event
        period_s = 1.0 / rate_hz
        begin = time.perf_counter()
        n = 0
        # Warm up until every stalled client has overflowed its queue (the
        # server flags it slow), so the measured span includes the drop path.
        # Realistic events would take minutes to fill the ~3 MB of kernel
        # buffers a loopback socket holds, so the stalled clients' own queues
        # get big incompressible filler messages (never published: healthy
        # clients do not see them).
        measure_from_s: float | None = None if stalled else warmup_s
        filler = envelope(
            {"type": "status", "file": "filler", "t": -1.0, "pad": os.urandom(24_000).hex()},
            seq=0,
            ts=0.0,
        )
        slow_at_start = 0
        cpu_from_s: float | None = None
        while True:
            due = begin + n * period_s
            now = time.perf_counter()
            if now < due:
                await asyncio.sleep(due - now)
            woke = time.perf_counter()
            elapsed_s = woke - begin
            if measure_from_s is None:
                for client in broadcaster.clients:
                    if "stalled" in client.connection.request.path and not client.slow:
                        for _ in range(FILLER_PER_TICK):
                            client.offer(filler)
            if measure_from_s is None and (
                broadcaster.stats()["slow_clients"] >= stalled or elapsed_s >= MAX_WARMUP_S
            ):
                measure_from_s = max(warmup_s, elapsed_s)
                slow_at_start = broadcaster.stats()["slow_clients"]
            if measure_from_s is not None and elapsed_s >= measure_from_s + seconds:
                break
            if measure_from_s is not None and cpu_from_s is None and elapsed_s >= measure_from_s:
                cpu_from_s = time.process_time()
                watcher_cpu_s[0] = 0.0
            event = make_event(n, t=round(n * period_s, 3))
            started = time.perf_counter()
            broadcaster.publish(event)
            done = time.perf_counter()
            if measure_from_s is not None and elapsed_s >= measure_from_s:
                publish_ms.append((done - started) * 1000.0)
                pending.append((event.t, started))
                late_ms.append((woke - due) * 1000.0)
                measured.add(event.t)
            n += 1
        server_cpu_s = time.process_time() - (cpu_from_s or 0.0) - watcher_cpu_s[0]
        await asyncio.sleep(0.5)
        watcher.cancel()
        stats_before_close = broadcaster.stats()
        await asyncio.sleep(1.0)  # let the last events reach the healthy clients
        for proc, _ in procs:
            assert proc.stdin is not None
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        for proc, _ in procs:
            await loop.run_in_executor(None, proc.wait)
    delays_ms: list[float] = []
    missing = 0
    for _, path in procs:
        for record in json.loads(path.read_text())["healthy"]:
            seen = set()
            for t, ts, received in record:
                if t in measured:
                    seen.add(t)
                    delays_ms.append((received - ts) * 1000.0)
            missing += len(measured - seen)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "clients": clients,
        "stalled": stalled,
        "healthy": healthy,
        "connected": connected,
        "connect_s": round(connect_s, 2),
        "events_measured": len(measured),
        "deliveries_measured": len(delays_ms),
        "missing": missing,
        "healthy_delay_ms": {
            "p50": _pct(delays_ms, 50),
            "p90": _pct(delays_ms, 90),
            "p99": _pct(delays_ms, 99),
            "max": round(max(delays_ms), 2) if delays_ms else None,
        },
        "publish_ms": {"p50": _pct(publish_ms, 50), "p99": _pct(publish_ms, 99)},
        # Publish until every healthy client's relay has handed the event to its
        # socket (2 ms resolution): the server's share of the delay.
        "server_fanout_ms": {"p50": _pct(fanout_ms, 50), "p99": _pct(fanout_ms, 99)},
        # Load-independent cost: CPU the server process spent per delivered message.
        "server_cpu_s": round(server_cpu_s, 2),
        "server_cpu_us_per_delivery": round(1e6 * server_cpu_s / max(1, len(delays_ms)), 1),
        "producer_late_ms": {
            "p50": _pct(late_ms, 50),
            "p99": _pct(late_ms, 99),
            "max": round(max(late_ms), 2) if late_ms else None,
        },
        "server_stats_at_end": stats_before_close,
        "warmup_s": round(measure_from_s, 2),
        "slow_clients_when_measuring_began": slow_at_start,
    }


def _raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        url, port, healthy, stalled, out = argv[1:6]
        _raise_open_files(4 * (int(healthy) + int(stalled)) + 64)
        asyncio.run(worker(url, int(port), int(healthy), int(stalled), Path(out)))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--stalled", type=int, default=50)
    parser.add_argument("--rate-hz", type=float, default=20.0, help="events published per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured span per run")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument(
        "--keepalive",
        action="store_true",
        help="keep the default 20 s pings, which close stalled clients within 40 s",
    )
    parser.add_argument(
        "--compression", action="store_true", help="ServerConfig(compression=True); default off"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if not 0 <= args.stalled < args.clients:
        parser.error("--stalled must be >= 0 and less than --clients")
    _raise_open_files(4 * args.clients + 64)
    load_before = os.getloadavg()
    runs = {}
    plan = [("one_client", 1, 0), ("loaded", args.clients, args.stalled)]
    if args.stalled:
        # The same healthy clients without the stalled ones: what the stalled ones cost.
        plan.append(("healthy_only", args.clients - args.stalled, 0))
    for name, clients, stalled in plan:
        print(f"run {name}: {clients} clients, {stalled} stalled ...", flush=True)
        runs[name] = asyncio.run(
            measure(
                clients=clients,
                stalled=stalled,
                rate_hz=args.rate_hz,
                seconds=args.seconds,
                warmup_s=args.warmup_s,
                workers=args.workers,
                keepalive=args.keepalive,
                compression=args.compression,
            )
        )
        print(json.dumps(runs[name], indent=2), flush=True)
    one, loaded = runs["one_client"], runs["loaded"]
    extra_p99_ms = round(loaded["healthy_delay_ms"]["p99"] - one["healthy_delay_ms"]["p99"], 2)
    commit, dirty = git_commit()
    commit = commit[:10]
    doc = {
        "commit": commit,
        "dirty": dirty,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "rate_hz": args.rate_hz,
        "seconds": args.seconds,
        "warmup_s": args.warmup_s,
        "workers": args.workers,
        "server_config": "ServerConfig() defaults (queue 256 messages"
        + (", permessage-deflate" if args.compression else ", compression off")
        + ("" if args.keepalive else ", keepalive pings off")
        + ")",
        "producer": "events published straight into the broadcaster at a fixed rate",
        "runs": runs,
        "extra_healthy_p99_ms": extra_p99_ms,
        "target_extra_p99_ms": 50.0,
        "target_met": extra_p99_ms <= 50.0 and loaded["missing"] == 0,
    }
    print(
        f"healthy delay p50/p99: 1 client {one['healthy_delay_ms']['p50']}/"
        f"{one['healthy_delay_ms']['p99']} ms; {args.clients} clients ({args.stalled} stalled) "
        f"{loaded['healthy_delay_ms']['p50']}/{loaded['healthy_delay_ms']['p99']} ms "
        f"(+{extra_p99_ms} ms p99, target <= 50); missing {loaded['missing']}"
    )
    print(
        f"recognizer side: publish p99 {one['publish_ms']['p99']} -> "
        f"{loaded['publish_ms']['p99']} ms; server fan-out p99 {one['server_fanout_ms']['p99']}"
        f" -> {loaded['server_fanout_ms']['p99']} ms; producer tick late p99 "
        f"{one['producer_late_ms']['p99']} -> {loaded['producer_late_ms']['p99']} ms"
    )
    mode = "-deflate" if args.compression else ""
    out = ROOT / "bench" / f"ws-load-{commit}-{args.rate_hz:g}hz{mode}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if "healthy_only" in runs:
        alone = runs["healthy_only"]
        print(
            f"without the stalled clients: {alone['healthy_delay_ms']['p50']}/"
            f"{alone['healthy_delay_ms']['p99']} ms; server CPU per delivery "
            f"{one['server_cpu_us_per_delivery']} / {loaded['server_cpu_us_per_delivery']} / "
            f"{alone['server_cpu_us_per_delivery']} us (1 / loaded / healthy only)"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
