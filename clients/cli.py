"""The ``synesthete`` command line: ``main(argv) -> int``.

Heavy libraries (torch, annoy, sounddevice) are imported inside the command
handlers, so ``--help`` and ``devices`` answer at once. Every user error is
one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from synesthete import __version__
from synesthete.constants import DEFAULT_INDEX_HOP_S, DEFAULT_LIVE_HOP_S
from synesthete.errors import ConfigError, SynestheteError

if TYPE_CHECKING:
    from synesthete.clients.app import Engine
    from synesthete.events import Event
    from synesthete.inference.config import EncoderConfig

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
FORMATS = ("jsonl", "tracklist", "txt", "csv", "cue", "json")


def _add_encoder_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="TorchScript encoder file (default: the packaged model)",
    )
    parser.add_argument(
        "--torch-device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where the encoder runs (default: CUDA when present)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1 for identify/listen, where windows come one at a"
        " time; all cores for index builds, which batch)",
    )


def _add_matcher_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hop",
        type=float,
        default=DEFAULT_LIVE_HOP_S,
        help=f"live window hop in seconds, 0.5-4 (default {DEFAULT_LIVE_HOP_S})",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="confidence needed to report a track (default: calibrated 0.5)",
    )
    parser.add_argument(
        "--resample-quality",
        choices=["VHQ", "HQ", "MQ", "LQ"],
        default="HQ",
        help="soxr quality of the stream resampler: HQ holds back ~40 ms of audio, LQ ~21 ms"
        " (default HQ)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synesthete",
        description="Real-time music recognizer: what is playing, where, and what it sounds like.",
    )
    parser.add_argument("--version", action="version", version=f"synesthete {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    index = commands.add_parser("index", help="build and maintain a library index")
    index_commands = index.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    for name, text in (
        ("build", "index audio files and folders (replaces the index)"),
        ("add", "add files and folders to an existing index"),
    ):
        sub = index_commands.add_parser(name, help=text)
        sub.add_argument("--index", type=Path, required=True, help="index directory")
        sub.add_argument("paths", nargs="+", metavar="PATH", help="audio file or folder")
        if name == "build":
            sub.add_argument(
                "--index-hop",
                type=float,
                default=DEFAULT_INDEX_HOP_S,
                help=f"index window hop in seconds (default {DEFAULT_INDEX_HOP_S})",
            )
        sub.add_argument(
            "--report",
            type=Path,
            default=None,
            help="write a JSON report of indexed and skipped files",
        )
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        _add_encoder_args(sub)
    remove = index_commands.add_parser("remove", help="remove tracks by id, path or folder")
    remove.add_argument("--index", type=Path, required=True)
    remove.add_argument("targets", nargs="+", metavar="ID_OR_PATH")
    stats = index_commands.add_parser("stats", help="show what the index holds")
    stats.add_argument("--index", type=Path, required=True)
    stats.add_argument("--json", action="store_true", help="machine-readable output")

    identify = commands.add_parser("identify", help="identify files, each replayed as a stream")
    identify.add_argument("--index", type=Path, required=True)
    identify.add_argument("--format", choices=FORMATS, default="jsonl")
    identify.add_argument(
        "--events",
        choices=["core", "all"],
        default="core",
        help="jsonl: core = now_playing/unknown; all adds candidates/status",
    )
    identify.add_argument("--output", "-o", type=Path, default=None, help="write here, not stdout")
    identify.add_argument("files", nargs="+", metavar="FILE")
    _add_encoder_args(identify)
    _add_matcher_args(identify)

    listen = commands.add_parser("listen", help="recognize a live input")
    listen.add_argument("--index", type=Path, required=True)
    source = listen.add_mutually_exclusive_group()
    source.add_argument("--device", default=None, help="input device: index or name substring")
    source.add_argument("--input", type=Path, default=None, help="replay a file as the input")
    listen.add_argument(
        "--realtime", action="store_true", help="with --input: pace the replay in real time"
    )
    listen.add_argument(
        "--serve",
        default=None,
        metavar="HOST:PORT",
        help="serve websocket events and the /overlay page (e.g. 127.0.0.1:8765)",
    )
    listen.add_argument("--token", default=None, help="require this token from websocket clients")
    listen.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        help="extra browser origin allowed to connect (repeatable)",
    )
    listen.add_argument("--no-tui", action="store_true", help="print JSONL events instead")
    listen.add_argument("--jsonl", type=Path, default=None, help="also append events here")
    listen.add_argument(
        "--tracklist", type=Path, default=None, help="write the session's tracklist here on exit"
    )
    listen.add_argument("--seconds", type=float, default=None, help="stop after this much audio")
    _add_encoder_args(listen)
    _add_matcher_args(listen)

    commands.add_parser("devices", help="list audio input devices")

    watch = commands.add_parser(
        "watch", help="print the events of a running server (websocket client)"
    )
    watch.add_argument("url", metavar="URL", help="ws://HOST:PORT/ (or HOST:PORT)")
    watch.add_argument("--jsonl", action="store_true", help="JSONL event payloads, one per line")
    watch.add_argument("--msgpack", action="store_true", help="use the msgpack subprotocol")
    watch.add_argument(
        "--types",
        default=None,
        metavar="T1,T2",
        help="only these event types (e.g. now_playing,unknown); subscribes on the server",
    )
    watch.add_argument("--token", default=None, help="the server's token (sent as a header)")
    watch.add_argument("--count", type=int, default=None, help="exit after this many events")
    watch.add_argument(
        "--wait", action="store_true", help="retry until the server is up, not only after drops"
    )
    watch.add_argument("--no-reconnect", action="store_true", help="exit when the connection ends")

    demo = commands.add_parser("demo", help="build a demo library and replay a live set")
    demo.add_argument("--dir", type=Path, default=Path("demo-data"), help="where demo files go")
    demo.add_argument("--serve", default="127.0.0.1:8765", metavar="HOST:PORT")
    demo.add_argument("--no-tui", action="store_true")
    demo.add_argument("--fast", action="store_true", help="replay as fast as possible")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "index": _cmd_index,
        "identify": _cmd_identify,
        "listen": _cmd_listen,
        "devices": _cmd_devices,
        "watch": _cmd_watch,
        "demo": _cmd_demo,
    }
    try:
        return handlers[args.command](args)
    except SynestheteError as err:
        print(f"synesthete: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("synesthete: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); nothing left to report to.
        return 0


def entry() -> None:
    sys.exit(main())


def _encoder_config(
    args: argparse.Namespace, *, default_threads: int | None = None
) -> EncoderConfig:
    from synesthete.inference.config import EncoderConfig

    threads = args.threads if args.threads is not None else default_threads
    return EncoderConfig(model_path=args.model, device=args.torch_device, threads=threads)


def _cmd_devices(args: argparse.Namespace) -> int:
    from synesthete.stream.sources import list_devices

    devices = list_devices()
    if not devices:
        print("no audio input devices found")
        return 0
    for device in devices:
        print(
            f"{device.index:3d}  {device.name}  ({device.hostapi}, "
            f"{device.max_input_channels} in, {device.default_sample_rate_hz:g} Hz)"
        )
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from synesthete.clients.progress import RichProgress
    from synesthete.index import builder
    from synesthete.index.config import IndexConfig

    if args.index_command == "stats":
        stats = builder.index_stats(args.index)
        if args.json:
            print(json.dumps(stats, indent=2, default=str))
        else:
            for key, value in stats.items():
                print(f"{key:>18}: {value}")
        return 0
    if args.index_command == "remove":
        report = builder.remove_from_index(args.index, list(args.targets))
        for target, reason in report.skipped:
            print(f"not removed {target}: {reason}", file=sys.stderr)
        print(report.summary())
        return 0

    from synesthete.inference.torchscript import TorchScriptEncoder

    encoder = TorchScriptEncoder(config=_encoder_config(args))
    progress = None if args.quiet else RichProgress()
    with progress if progress is not None else contextlib.nullcontext():
        if args.index_command == "build":
            config = IndexConfig(index_hop_s=args.index_hop)
            report = builder.build_index(
                args.index,
                [Path(p) for p in args.paths],
                encoder=encoder,
                config=config,
                progress=progress,
            )
        else:
            report = builder.add_to_index(
                args.index, [Path(p) for p in args.paths], encoder=encoder, progress=progress
            )
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if args.report is not None:
        args.report.write_text(report.to_json())
    print(report.summary())
    return 0


def _open_engine(args: argparse.Namespace) -> Engine:
    from synesthete.clients.app import open_engine

    return open_engine(
        index_dir=args.index,
        # One window at a time: intra-op threads only add contention (measured:
        # 2 threads took 2.3x longer than 1 on a loaded 2-core machine).
        encoder_config=_encoder_config(args, default_threads=1),
        live_hop_s=args.hop,
        on_threshold=args.threshold,
        resample_quality=args.resample_quality,
    )


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8") as handle:
        yield handle


def _cmd_identify(args: argparse.Namespace) -> int:
    from synesthete.clients.identify import identify_file
    from synesthete.clients.jsonl import JsonlWriter
    from synesthete.clients.tracklist import build_tracklist, write_tracklist

    engine = _open_engine(args)
    types = None if args.events == "all" else frozenset({"now_playing", "unknown"})
    failures = 0
    try:
        with _output(args.output) as out:
            writer = JsonlWriter(out, types=types)
            for name in args.files:
                try:
                    if args.format == "jsonl":
                        for event in identify_file(engine, name):
                            writer.write(event)
                    else:
                        events: list[Event] = list(identify_file(engine, name))
                        tracklist = build_tracklist(events, source=name)
                        write_tracklist(tracklist, out, fmt=args.format)
                except SynestheteError as err:
                    failures += 1
                    print(f"synesthete: error: {err}", file=sys.stderr)
    finally:
        engine.close()
    return EXIT_ERROR if failures else 0


def _cmd_listen(args: argparse.Namespace) -> int:
    if args.realtime and args.input is None:
        raise ConfigError("--realtime only applies with --input FILE")
    from synesthete.clients.listen import ListenOptions, listen

    options = ListenOptions(
        device=args.device,
        input_path=args.input,
        realtime=args.realtime,
        serve=args.serve,
        token=args.token,
        allowed_origins=tuple(args.allow_origin),
        tui=not args.no_tui,
        jsonl_path=args.jsonl,
        tracklist_path=args.tracklist,
        max_seconds=args.seconds,
    )
    engine = _open_engine(args)
    try:
        return asyncio.run(listen(engine=engine, options=options))
    finally:
        engine.close()


def _cmd_watch(args: argparse.Namespace) -> int:
    from synesthete.clients.watch import WatchConfig, parse_types, watch

    config = WatchConfig(
        url=args.url,
        jsonl=args.jsonl,
        msgpack=args.msgpack,
        types=None if args.types is None else parse_types(args.types),
        token=args.token,
        count=args.count,
        reconnect=not args.no_reconnect,
        wait=args.wait,
    )
    try:
        return asyncio.run(watch(config, out=sys.stdout, err=sys.stderr))
    except KeyboardInterrupt:
        # Ctrl-C is how a watch ends: asyncio.run has closed the connection already.
        return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from synesthete.clients.demo import run_demo

    return run_demo(
        directory=args.dir, serve=args.serve, tui=not args.no_tui, realtime=not args.fast
    )


if __name__ == "__main__":
    entry()
