"""Soak: hours of audio through ``synesthete listen --serve`` with clients attached.

    python scripts/soak.py [--minutes 60] [--speed 20] [--dir demo-data] [--interval-s 60]

Builds (or reuses) the built-in demo library (``clients/demo.py``: 24
synthesized tracks, their index, and a 90 s "live set" of four crossfaded
excerpts and a piece not in the library), then runs the real CLI in a
subprocess::

    synesthete listen --index DIR/index --input DIR/set.wav --loop --speed 20 \\
        --seconds 3600 --serve 127.0.0.1:PORT --no-tui

``--loop`` replays the set for ever and ``--speed`` paces it 20 times faster
than real time, through the same live loop a microphone uses (capture
callback, ring buffer, executor thread, status events, websocket server);
``--seconds`` ends it after ``--minutes`` of audio. Attached meanwhile:

- a JSON client and a msgpack client that read everything;
- a client subscribed to ``now_playing``/``unknown``;
- a churning client that connects, takes its snapshot and leaves, up to 4
  times a second;
- a stalled client that never reads, replaced every 30 s.

Every ``--sample-s`` the script reads the process's ``VmRSS`` from
``/proc/PID/status`` and notes the stream time and event counts; the
``status`` events give the per-window processing time (``latency_ms``: the
median of the last 8 windows' encoder + search + matcher time) and the
ring buffer's ``overrun_frames`` (non-zero if the loop did not keep up).
It reports the RSS after warm-up (the first ``--warmup-fraction`` of the
stream, default 10 %) and the largest deviation from it afterwards (target:
within ±5 %), and writes ``bench/soak-<commit>-<minutes>min.json`` with the
curve per ``--interval-s`` of audio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
from provenance import git_commit
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Observed:
    """What the clients saw, shared by the tasks of this process."""

    stream_t: float = 0.0
    events: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    msgpack_events: int = 0
    subscribed_events: int = 0
    churn_connections: int = 0
    stalled_connections: int = 0
    latency_ms: list[float] = field(default_factory=list)  # since the last sample
    overrun_frames: int = 0
    clients_reported: int = 0


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _connect_when_up(url: str, **kwargs: Any) -> ClientConnection:
    deadline = time.monotonic() + 120
    while True:
        try:
            return await connect(url, **kwargs)
        except (OSError, InvalidHandshake):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _json_reader(url: str, seen: Observed) -> None:
    ws = await _connect_when_up(url)
    with contextlib.suppress(ConnectionClosed):
        async for frame in ws:
            message = json.loads(frame)
            kind = message["type"]
            if kind == "snapshot":
                continue
            seen.events += 1
            seen.by_type[kind] = seen.by_type.get(kind, 0) + 1
            seen.stream_t = max(seen.stream_t, float(message.get("t", 0.0)))
            if kind == "status":
                if message.get("latency_ms") is not None:
                    seen.latency_ms.append(float(message["latency_ms"]))
                seen.overrun_frames = int(message.get("overrun_frames", 0))
                seen.clients_reported = int(message.get("clients", 0))


async def _msgpack_reader(url: str, seen: Observed) -> None:
    ws = await _connect_when_up(url, subprotocols=["synesthete.v1.msgpack"])
    with contextlib.suppress(ConnectionClosed):
        async for frame in ws:
            if msgpack.unpackb(frame, raw=False)["type"] != "snapshot":
                seen.msgpack_events += 1


async def _subscribed_reader(url: str, seen: Observed) -> None:
    ws = await _connect_when_up(url)
    await ws.send(json.dumps({"v": 1, "type": "subscribe", "types": ["now_playing", "unknown"]}))
    with contextlib.suppress(ConnectionClosed):
        async for frame in ws:
            if json.loads(frame)["type"] in ("now_playing", "unknown"):
                seen.subscribed_events += 1


async def _churn(url: str, seen: Observed) -> None:
    await (await _connect_when_up(url)).close()
    while True:
        try:
            async with connect(url, open_timeout=10) as ws:
                await asyncio.wait_for(ws.recv(), 10)
                seen.churn_connections += 1
        except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError):
            return  # the server is gone
        await asyncio.sleep(0.25)


async def _stalled(url: str, seen: Observed) -> None:
    while True:
        try:
            ws = await _connect_when_up(url, max_queue=1)
        except (OSError, InvalidHandshake):
            return
        ws.transport.pause_reading()
        seen.stalled_connections += 1
        await asyncio.sleep(30)
        ws.transport.abort()


async def soak(
    *, process: subprocess.Popen[bytes], url: str, sample_s: float
) -> tuple[list[dict[str, Any]], Observed]:
    seen = Observed()
    tasks = [
        asyncio.create_task(job(url, seen))
        for job in (_json_reader, _msgpack_reader, _subscribed_reader, _churn, _stalled)
    ]
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    while process.poll() is None:
        await asyncio.sleep(sample_s)
        rss = _rss_mb(process.pid)
        if rss is None:
            break
        latencies, seen.latency_ms = seen.latency_ms, []
        samples.append(
            {
                "wall_s": round(time.monotonic() - started, 2),
                "t_s": round(seen.stream_t, 1),
                "rss_mb": round(rss, 2),
                "events": seen.events,
                "latency_ms": latencies,
                "overrun_frames": seen.overrun_frames,
            }
        )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return samples, seen


def summarize(
    samples: list[dict[str, Any]], *, total_s: float, warmup_fraction: float, interval_s: float
) -> dict[str, Any]:
    # Samples taken once the whole stream was consumed see the process tear down.
    samples = [s for s in samples if s["t_s"] < total_s] or samples
    warm = [s for s in samples if s["t_s"] >= warmup_fraction * total_s]
    if not warm:
        raise SystemExit("soak: no samples after the warm-up; was the stream too short?")
    base = warm[0]["rss_mb"]
    deviations = [100.0 * (s["rss_mb"] - base) / base for s in warm]
    t = np.array([s["t_s"] for s in warm])
    rss = np.array([s["rss_mb"] for s in warm])
    slope_mb_per_h = float(np.polyfit(t, rss, 1)[0] * 3600.0) if len(warm) > 2 else 0.0
    curve = []
    edge = interval_s
    bucket: list[dict[str, Any]] = []
    for sample in samples:
        bucket.append(sample)
        if sample["t_s"] >= edge or sample is samples[-1]:
            latency = [x for s in bucket for x in s["latency_ms"]]
            curve.append(
                {
                    "t_s": sample["t_s"],
                    "wall_s": sample["wall_s"],
                    "rss_mb": sample["rss_mb"],
                    "events": sample["events"],
                    "latency_p50_ms": round(float(np.percentile(latency, 50)), 2)
                    if latency
                    else None,
                    "latency_p99_ms": round(float(np.percentile(latency, 99)), 2)
                    if latency
                    else None,
                    "overrun_frames": sample["overrun_frames"],
                }
            )
            bucket = []
            while edge <= sample["t_s"]:
                edge += interval_s
    all_latency = [x for s in samples for x in s["latency_ms"]]
    return {
        "rss_after_warmup_mb": base,
        "warmup_ends_at_t_s": warm[0]["t_s"],
        "rss_final_mb": samples[-1]["rss_mb"],
        "rss_min_after_warmup_mb": float(rss.min()),
        "rss_max_after_warmup_mb": float(rss.max()),
        "max_deviation_pct": round(max(deviations, key=abs), 2),
        "rss_slope_mb_per_audio_hour": round(slope_mb_per_h, 2),
        "within_5_pct": all(abs(d) <= 5.0 for d in deviations),
        "latency_ms_p50": round(float(np.percentile(all_latency, 50)), 2) if all_latency else None,
        "latency_ms_p99": round(float(np.percentile(all_latency, 99)), 2) if all_latency else None,
        "curve": curve,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=60.0, help="minutes of audio")
    parser.add_argument("--speed", type=float, default=20.0, help="times faster than real time")
    parser.add_argument("--dir", type=Path, default=ROOT / "demo-data", help="demo library")
    parser.add_argument("--sample-s", type=float, default=1.0, help="wall seconds per sample")
    parser.add_argument("--interval-s", type=float, default=60.0, help="audio seconds per row")
    parser.add_argument("--warmup-fraction", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of listen")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)

    from synesthete.clients.demo import prepare_demo

    files = prepare_demo(args.dir, quiet=True)
    total_s = args.minutes * 60.0
    port = _free_port()
    logs = Path(tempfile.mkdtemp(prefix="synesthete-soak-"))
    command = [
        sys.executable,
        "-m",
        "synesthete.clients.cli",
        "listen",
        "--index",
        str(files.index),
        "--input",
        str(files.set_path),
        "--loop",
        "--speed",
        f"{args.speed:g}",
        "--seconds",
        f"{total_s:g}",
        "--serve",
        f"127.0.0.1:{port}",
        "--no-tui",
        "--threads",
        str(args.threads),
    ]
    print("soak:", " ".join(command[2:]), flush=True)
    with (logs / "stdout.jsonl").open("wb") as out, (logs / "stderr.txt").open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err)
        try:
            wall_started = time.monotonic()
            samples, seen = asyncio.run(
                soak(process=process, url=f"ws://127.0.0.1:{port}/", sample_s=args.sample_s)
            )
            wall_s = time.monotonic() - wall_started
        finally:
            if process.poll() is None:
                process.terminate()
            code = process.wait()
    if code != 0:
        sys.exit(
            f"soak: listen exited with {code} (logs kept in {logs}): "
            f"{(logs / 'stderr.txt').read_text()[-2000:]}"
        )
    shutil.rmtree(logs, ignore_errors=True)
    summary = summarize(
        samples,
        total_s=total_s,
        warmup_fraction=args.warmup_fraction,
        interval_s=args.interval_s,
    )
    commit, dirty = git_commit()
    commit = commit[:10]
    doc = {
        "commit": commit,
        "dirty": dirty,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join(command[2:]),
        "audio_s": total_s,
        "wall_s": round(wall_s, 1),
        "achieved_speed": round(seen.stream_t / wall_s, 1) if wall_s else None,
        "events_json_client": seen.events,
        "events_by_type": seen.by_type,
        "events_msgpack_client": seen.msgpack_events,
        "events_subscribed_client": seen.subscribed_events,
        "churn_connections": seen.churn_connections,
        "stalled_connections": seen.stalled_connections,
        "max_overrun_frames": max((s["overrun_frames"] for s in samples), default=0),
        **summary,
    }
    curve = doc.pop("curve")
    print(json.dumps(doc, indent=2))
    print(f"{'t_s':>8} {'rss_mb':>8} {'events':>8} {'p50_ms':>7} {'p99_ms':>7}")
    for row in curve:
        print(
            f"{row['t_s']:8.0f} {row['rss_mb']:8.1f} {row['events']:8d} "
            f"{row['latency_p50_ms'] or 0:7.2f} {row['latency_p99_ms'] or 0:7.2f}"
        )
    doc["curve"] = curve
    out_path = ROOT / "bench" / f"soak-{commit}-{args.minutes:g}min.json"
    out_path.parent.mkdir(exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=2) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(
        f"RSS after warm-up {doc['rss_after_warmup_mb']:.1f} MB, max deviation "
        f"{doc['max_deviation_pct']:+.2f} % (target ±5 %), slope "
        f"{doc['rss_slope_mb_per_audio_hour']:+.2f} MB per audio hour; wrote {out_path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
