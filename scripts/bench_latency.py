"""End-to-end live latency: last sample of a window in the ring buffer → websocket frame.

    python scripts/bench_latency.py [--index DIR] [--input FILE] [--seconds 60] [--json OUT]

Runs the real live loop in-process (``clients.live.run_live``) on a file
replayed in real time through the capture callback, with the websocket server
and one client on localhost. The callback is wrapped to note the wall time at
which each block landed in the ring buffer; for every window the client
receives (the ``candidates`` frame each window produces), latency is the
client's receive time minus the time the window's last input sample arrived.
Without ``--index`` it synthesizes and indexes a small library first.
Prints p50/p99 and writes ``bench/latency-<commit>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from provenance import git_commit
from websockets.asyncio.client import connect

from synesthete.clients.app import open_engine
from synesthete.clients.live import LiveConfig, run_live
from synesthete.clients.server import ServerConfig, WebsocketServer
from synesthete.constants import SAMPLE_RATE_HZ
from synesthete.inference.config import EncoderConfig
from synesthete.stream.sources import AudioCallback, FileSource
from synesthete.stream.synth import synth_track

ROOT = Path(__file__).resolve().parents[1]


class TimedFileSource(FileSource):
    """A real-time FileSource whose callback also records (frames so far, arrival time)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marks_frames: list[int] = []
        self.marks_time: list[float] = []

    def start(self, callback: AudioCallback) -> None:
        total = 0

        def timed(indata: Any, frames: int, time_info: Any, status: Any) -> None:
            nonlocal total
            callback(indata, frames, time_info, status)
            total += frames
            self.marks_frames.append(total)
            self.marks_time.append(time.perf_counter())

        super().start(timed)

    def arrival(self, input_frame: int) -> float | None:
        """When the block holding ``input_frame`` (1-based count) entered the ring buffer."""
        i = bisect.bisect_left(self.marks_frames, input_frame)
        return self.marks_time[i] if i < len(self.marks_time) else None


def make_library(work: Path) -> tuple[Path, Path]:
    music = work / "music"
    music.mkdir(parents=True)
    tracks = []
    for n in range(12):
        audio = synth_track(seed=n, duration_s=60.0, sample_rate_hz=44_100)
        sf.write(music / f"track-{n:02d}.flac", audio, 44_100)
        tracks.append(audio)
    index = work / "index"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "synesthete.clients.cli",
            "index",
            "build",
            "--index",
            str(index),
            "--quiet",
            str(music),
        ],
        check=True,
    )
    stream = np.concatenate([tracks[3][: 44_100 * 30], tracks[7][: 44_100 * 30]])
    path = work / "stream.wav"
    sf.write(path, np.stack([stream, stream], axis=1), 44_100)
    return index, path


async def measure(
    index: Path, path: Path, seconds: float, threads: int, quality: str, early: bool
) -> dict[str, Any]:
    engine = open_engine(
        index_dir=index, encoder_config=EncoderConfig(threads=threads), resample_quality=quality
    )
    source = TimedFileSource(path=path, realtime=True, block_frames=512)
    rate = source.sample_rate_hz
    latencies: list[float] = []
    async with (
        WebsocketServer(config=ServerConfig(port=0)) as server,
        connect(server.url) as client,
    ):

        async def receive() -> None:
            async for frame in client:
                received = time.perf_counter()
                message = json.loads(frame)
                if message.get("type") != "candidates":
                    continue
                last_input = int(np.ceil(float(message["t"]) * rate))
                arrived = source.arrival(last_input)
                if arrived is not None:
                    latencies.append((received - arrived) * 1000.0)

        reader = asyncio.create_task(receive())
        await run_live(
            engine=engine,
            source=source,
            sinks=[server.broadcaster.publish],
            config=LiveConfig(max_seconds=seconds, early_windows=early),
            clients=server.broadcaster.client_count,
        )
        await asyncio.sleep(0.2)
        reader.cancel()
    engine.close()
    arr = np.array(latencies[1:])  # the first window pays the executor thread's start
    return {
        "windows": int(arr.size),
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p90_ms": round(float(np.percentile(arr, 90)), 2),
        "p99_ms": round(float(np.percentile(arr, 99)), 2),
        "max_ms": round(float(arr.max()), 2),
        "block_frames": 512,
        "input_rate_hz": rate,
        "encoder_rate_hz": SAMPLE_RATE_HZ,
        "torch_threads": threads,
        "resample_quality": quality,
        "resampler_holdback_ms": round(holdback_ms(rate, quality), 1),
        "early_windows": early,
    }


def holdback_ms(rate: int, quality: str) -> float:
    """Audio soxr holds back in steady state: a window cannot complete before this."""
    from synesthete.stream.resample import StreamResampler

    resampler = StreamResampler(in_rate_hz=rate, quality=quality)
    block = np.zeros(512, dtype=np.float32)
    worst = 0
    for n in range(400):
        resampler.push(block)
        if n > 50:
            worst = max(worst, resampler.latency_samples)
    return worst * 1000.0 / SAMPLE_RATE_HZ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", type=Path, default=None)
    parser.add_argument("--input", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resample-quality", default="HQ", choices=["VHQ", "HQ", "MQ", "LQ", "QQ"])
    parser.add_argument(
        "--wait-for-resampler",
        action="store_true",
        help="measure without early windows: each window waits for soxr's held-back samples",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if (args.index is None) != (args.input is None):
        sys.exit("bench_latency: give both --index and --input, or neither")
    work = Path(tempfile.mkdtemp(prefix="synesthete-latency-"))
    index, path = (args.index, args.input) if args.index else make_library(work)
    early = not args.wait_for_resampler
    try:
        result = asyncio.run(
            measure(index, path, args.seconds, args.threads, args.resample_quality, early)
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    commit, dirty = git_commit()
    doc = {
        "commit": commit,
        "dirty": dirty,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **result,
    }
    print(json.dumps(doc, indent=2))
    (ROOT / "bench").mkdir(exist_ok=True)
    mode = "early" if early else "wait"
    (ROOT / "bench" / f"latency-{commit[:10]}-{args.resample_quality}-{mode}.json").write_text(
        json.dumps(doc, indent=2) + "\n"
    )
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
