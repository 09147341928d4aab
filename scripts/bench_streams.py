"""Network streams: time to the first right answer, reconnect time, and a soak with a plays log.

    python scripts/bench_streams.py [--tracks 5] [--reconnects 3] [--soak-minutes 12]
                                    [--soak-speed 4] [--dir DIR]

Everything is real and local: a synthesized, tagged library indexed with the
CLI, an Icecast2 server on a free port, ``ffmpeg`` source clients, and
``synesthete listen`` subprocesses (one torch thread each).

1. **First answer.** For each of ``--tracks`` tracks, a 30 s excerpt is played
   into an Icecast MP3 mount by ``ffmpeg -re``; the time from starting
   ``listen --input URL`` to its first ``now_playing`` of the right track is
   measured, and against it the same excerpt through ``listen --input FILE
   --realtime`` (both include starting the process and loading the model).
2. **Reconnect.** With ``listen`` on the mount, the source client is killed,
   ``listen`` reports the loss, and the source is started again ``--gap-s``
   later; measured: from the restart to the track named again.
3. **Soak.** The library's tracks back to back, looped, are sent by ``ffmpeg
   -readrate SPEED`` (faster than real time) and ``listen --input URL --speed
   SPEED --plays plays.jsonl`` runs for ``--soak-minutes``; its RSS is read
   from ``/proc`` every ``--sample-s``. Reported: RSS after warm-up and the
   largest deviation from it afterwards (target ±5 %), ring overruns, and
   whether every play in the log names the track the loop played then
   (RSS after warm-up: the first sample past 20 % of the run).

Prints the figures and writes ``bench/streams-<commit>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from provenance import git_commit

from synesthete.stream.synth import synth_track, synth_track_title

ROOT = Path(__file__).resolve().parents[1]
RATE_HZ = 22_050
TRACK_S = 40.0
SOURCE_PASSWORD = "bench-source"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "synesthete.clients.cli", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def build_library(root: Path, n_tracks: int) -> tuple[Path, list[str]]:
    from mutagen.flac import FLAC

    music = root / "music"
    music.mkdir(parents=True, exist_ok=True)
    titles = []
    for n in range(n_tracks):
        path = music / f"{n:02d}.flac"
        title = synth_track_title(n)
        titles.append(title)
        if not path.exists():
            audio = synth_track(seed=n, duration_s=TRACK_S, sample_rate_hz=RATE_HZ)
            sf.write(path, audio, RATE_HZ, format="FLAC", subtype="PCM_16")
            tags = FLAC(path)
            tags["title"] = title
            tags["artist"] = f"Bench Artist {n + 1}"
            tags.save()
    index = root / "index"
    if not (index / "CURRENT").exists():
        subprocess.run(
            _cli("index", "build", "--index", str(index), str(music), "--quiet"),
            env=_env(),
            check=True,
            capture_output=True,
        )
    return index, titles


def excerpt(root: Path, n: int, *, start_s: float, seconds: float) -> Path:
    path = root / f"excerpt-{n}.wav"
    if not path.exists():
        audio = synth_track(seed=n, duration_s=TRACK_S, sample_rate_hz=RATE_HZ)
        clip = audio[int(start_s * RATE_HZ) : int((start_s + seconds) * RATE_HZ)]
        sf.write(path, clip, RATE_HZ, subtype="PCM_16")
    return path


@contextlib.contextmanager
def icecast(root: Path) -> Iterator[int]:
    port = _free_port()
    owner = ""
    if os.geteuid() == 0:
        owner = "<changeowner><user>icecast2</user><group>icecast</group></changeowner>"
    share = "/usr/share/icecast2"
    config = root / "icecast.xml"
    config.write_text(
        f"""<icecast><limits><sources>4</sources><burst-size>65536</burst-size>
<queue-size>4194304</queue-size></limits>
<authentication><source-password>{SOURCE_PASSWORD}</source-password>
<admin-user>admin</admin-user><admin-password>{SOURCE_PASSWORD}</admin-password></authentication>
<hostname>127.0.0.1</hostname><listen-socket><port>{port}</port>
<bind-address>127.0.0.1</bind-address></listen-socket><fileserve>0</fileserve>
<paths><basedir>{share}</basedir><logdir>/tmp</logdir><webroot>{share}/web</webroot>
<adminroot>{share}/admin</adminroot></paths>
<logging><accesslog>-</accesslog><errorlog>-</errorlog><loglevel>2</loglevel></logging>
<security><chroot>0</chroot>{owner}</security></icecast>
"""
    )
    with (root / "icecast.log").open("wb") as log:
        process = subprocess.Popen(["icecast2", "-c", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("icecast2 did not start: " + (root / "icecast.log").read_text())
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


class Source:
    """``ffmpeg`` playing a file in a loop into a mount (``-re``, or ``-readrate``)."""

    def __init__(self, port: int, mount: str, audio: Path, *, readrate: float = 1.0) -> None:
        self.port, self.mount, self.audio, self.readrate = port, mount, audio, readrate
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.mount}"

    def start(self) -> None:
        pace = ["-re"] if self.readrate == 1.0 else ["-readrate", f"{self.readrate:g}"]
        self.process = subprocess.Popen(
            [
                *("ffmpeg", "-nostdin", "-loglevel", "error", *pace, "-stream_loop", "-1"),
                *("-i", str(self.audio), "-c:a", "libmp3lame", "-b:a", "128k"),
                *("-content_type", "audio/mpeg", "-f", "mp3"),
                f"icecast://source:{SOURCE_PASSWORD}@127.0.0.1:{self.port}{self.mount}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.read(1024):
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"mount {self.mount} did not come up")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def _wait(
    path: Path,
    match: Callable[[dict[str, Any]], bool],
    *,
    after: int = 0,
    timeout_s: float = 120.0,
    process: subprocess.Popen[bytes] | None = None,
) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = _events(path)
        for i in range(after, len(events)):
            if match(events[i]):
                return i
        if process is not None and process.poll() is not None:
            raise SystemExit(f"listen exited with {process.returncode}")
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting in {path}")


def _playing(title: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "now_playing" and e["track"]["title"] == title


def _listen(index: Path, source: str, events: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        _cli(
            *("listen", "--index", str(index), "--input", source, "--no-tui"),
            *("--jsonl", str(events), "--threads", "1", *extra),
        ),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def first_answer(
    root: Path, index: Path, titles: list[str], port: int, tracks: int
) -> dict[str, Any]:
    rows = []
    for n in range(tracks):
        clip = excerpt(root, n, start_s=5.0, seconds=30.0)
        source = Source(port, f"/first-{n}.mp3", clip)
        source.start()
        try:
            url_s, url_audio_s = _time_to_answer(
                index, source.url, root / f"first-url-{n}.jsonl", titles[n]
            )
        finally:
            source.kill()
        file_s, file_audio_s = _time_to_answer(
            index, str(clip), root / f"first-file-{n}.jsonl", titles[n], "--realtime"
        )
        rows.append(
            {
                "track": n,
                "icecast_s": round(url_s, 2),
                "file_realtime_s": round(file_s, 2),
                "icecast_from_first_event_s": round(url_audio_s, 2),
                "file_realtime_from_first_event_s": round(file_audio_s, 2),
            }
        )
        print(
            f"first answer, track {n}: Icecast {url_s:.2f} s ({url_audio_s:.2f} s after its"
            f" first event), file --realtime {file_s:.2f} s ({file_audio_s:.2f} s)"
        )
    return {
        "rows": rows,
        **{
            f"{key}_p50_s": round(statistics.median(r[f"{key}_s"] for r in rows), 2)
            for key in (
                "icecast",
                "file_realtime",
                "icecast_from_first_event",
                "file_realtime_from_first_event",
            )
        },
    }


def _time_to_answer(
    index: Path, source: str, events: Path, title: str, *extra: str
) -> tuple[float, float]:
    """Seconds from starting ``listen`` to its first right ``now_playing``, and from its
    first event (audio flowing: process start-up and model loading left out)."""
    started = time.monotonic()
    process = _listen(index, source, events, "--events", "all", *extra)
    try:
        first_event = None
        while first_event is None:
            if events.exists() and events.stat().st_size:
                first_event = time.monotonic()
            elif process.poll() is not None:
                raise SystemExit(f"listen exited with {process.returncode}")
            else:
                time.sleep(0.02)
        _wait(events, _playing(title), process=process)
        answered = time.monotonic()
    finally:
        _stop(process)
    return answered - started, answered - first_event


def reconnects(
    root: Path, index: Path, titles: list[str], port: int, times: int, gap_s: float
) -> dict[str, Any]:
    n = 0
    source = Source(port, "/reconnect.mp3", excerpt(root, n, start_s=5.0, seconds=30.0))
    source.start()
    events = root / "reconnect.jsonl"
    process = _listen(index, source.url, events, "--reconnect-timeout", "inf")
    rows = []
    try:
        at = _wait(events, _playing(titles[n]), process=process)
        for _ in range(times):
            source.kill()
            lost = _wait(
                events,
                lambda e: e["type"] == "status" and e.get("input") == "lost",
                after=at,
                process=process,
            )
            time.sleep(gap_s)
            restarted = time.monotonic()
            source.start()
            back = _wait(
                events,
                lambda e: e["type"] == "status" and "input back" in str(e.get("message")),
                after=lost,
                process=process,
            )
            back_s = time.monotonic() - restarted
            at = _wait(events, _playing(titles[n]), after=back, process=process)
            named_s = time.monotonic() - restarted
            rows.append({"audio_back_s": round(back_s, 2), "named_again_s": round(named_s, 2)})
            print(
                f"reconnect: audio back {back_s:.2f} s, named again {named_s:.2f} s after restart"
            )
    finally:
        _stop(process)
        source.kill()
    return {
        "gap_s": gap_s,
        "rows": rows,
        "named_again_p50_s": round(statistics.median(r["named_again_s"] for r in rows), 2),
        "audio_back_p50_s": round(statistics.median(r["audio_back_s"] for r in rows), 2),
    }


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def soak(
    root: Path,
    index: Path,
    titles: list[str],
    port: int,
    *,
    minutes: float,
    speed: float,
    sample_s: float,
) -> dict[str, Any]:
    loop = root / "loop.wav"
    tracks = [
        synth_track(seed=n, duration_s=TRACK_S, sample_rate_hz=RATE_HZ) for n in range(len(titles))
    ]
    sf.write(loop, np.concatenate(tracks), RATE_HZ, subtype="PCM_16")
    source = Source(port, "/soak.mp3", loop, readrate=speed)
    source.start()
    events = root / "soak.jsonl"
    plays = root / "plays.jsonl"
    for path in (events, plays):
        path.unlink(missing_ok=True)
    seconds = minutes * 60.0 * speed
    process = _listen(
        index, source.url, events, "--speed", f"{speed:g}", "--plays", str(plays),
        "--seconds", f"{seconds:g}", "--events", "all",
    )  # fmt: skip
    samples = []
    started = time.monotonic()
    try:
        while process.poll() is None and time.monotonic() - started < minutes * 60 + 120:
            time.sleep(sample_s)
            rss = _rss_mb(process.pid)
            if rss is None:
                break
            samples.append(
                {"wall_s": round(time.monotonic() - started, 1), "rss_mb": round(rss, 2)}
            )
        _stop(process)
    finally:
        source.kill()
    wall_s = time.monotonic() - started
    status = [e for e in _events(events) if e["type"] == "status"]
    overruns = max((int(e.get("overrun_frames", 0)) for e in status), default=0)
    losses = sum(1 for e in status if e.get("input") == "lost")
    stream_s = max((float(e["t"]) for e in status), default=0.0)
    # Start-up (torch, the model, the first windows) takes a while on a loaded machine.
    warm = [s for s in samples if s["wall_s"] >= 0.2 * wall_s]
    base = warm[0]["rss_mb"] if warm else None
    deviation = max(abs(s["rss_mb"] - base) / base for s in warm) * 100.0 if base else None
    records = (
        [json.loads(line) for line in plays.read_text().splitlines()] if plays.exists() else []
    )
    order = {title: i for i, title in enumerate(titles)}
    in_order = 0
    for previous, record in itertools.pairwise(records):
        expected = (order[previous["track"]["title"]] + 1) % len(titles)
        in_order += order[record["track"]["title"]] == expected
    complete = [r for r in records[1:-1]]  # the first and last may be cut by start and stop
    durations = [r["offset_end_s"] - r["offset_start_s"] for r in complete]
    result = {
        "speed": speed,
        "wall_minutes": round(wall_s / 60.0, 2),
        "stream_minutes": round(stream_s / 60.0, 2),
        "rss_after_warmup_mb": base,
        "rss_max_deviation_pct": None if deviation is None else round(deviation, 2),
        "rss_samples": samples,
        "overrun_frames": overruns,
        "input_losses": losses,
        "plays": len(records),
        "plays_expected": round(stream_s / TRACK_S, 1),
        "plays_in_loop_order": in_order,
        "play_pairs": max(0, len(records) - 1),
        "play_offsets_covered_p50_s": round(statistics.median(durations), 1) if durations else None,
        "plays_with_start_before_end": sum(r["start"] < r["end"] for r in records),
    }
    print(
        f"soak: {result['stream_minutes']} min of audio in {result['wall_minutes']} min"
        f" ({speed:g}x); RSS {base} MB after warm-up, max deviation"
        f" {result['rss_max_deviation_pct']} %; overruns {overruns}; losses {losses};"
        f" plays {len(records)} (expected ~{result['plays_expected']}), in loop order"
        f" {in_order}/{result['play_pairs']}; offsets covered p50"
        f" {result['play_offsets_covered_p50_s']} s of {TRACK_S:g}"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=5)
    parser.add_argument("--reconnects", type=int, default=3)
    parser.add_argument("--gap-s", type=float, default=3.0)
    parser.add_argument("--soak-minutes", type=float, default=12.0)
    parser.add_argument("--soak-speed", type=float, default=4.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    for tool in ("icecast2", "ffmpeg"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not installed (scripts/setup.sh installs it)")
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-streams-"))
    root.mkdir(parents=True, exist_ok=True)
    index, titles = build_library(root, max(args.tracks, 6))
    commit, dirty = git_commit()
    with icecast(root) as port:
        first = first_answer(root, index, titles, port, args.tracks)
        print(
            f"first right now_playing, p50 over {args.tracks} tracks: Icecast"
            f" {first['icecast_p50_s']} s, file --realtime {first['file_realtime_p50_s']} s"
        )
        again = reconnects(root, index, titles, port, args.reconnects, args.gap_s)
        print(f"reconnect: named again {again['named_again_p50_s']} s (p50) after the restart")
        soaked = (
            soak(
                root,
                index,
                titles,
                port,
                minutes=args.soak_minutes,
                speed=args.soak_speed,
                sample_s=args.sample_s,
            )
            if args.soak_minutes > 0
            else None
        )
    report = {
        "commit": commit,
        "dirty": dirty,
        "machine": f"{os.cpu_count()} CPUs, shared with a training run; listen with 1 torch thread",
        "first_answer": first,
        "reconnect": again,
        "soak": soaked,
    }
    out = ROOT / "bench" / f"streams-{commit[:10]}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
