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
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from synesthete import __version__
from synesthete.checks import is_url
from synesthete.constants import (
    DEFAULT_INDEX_HOP_S,
    DEFAULT_LIVE_HOP_S,
    DEFAULT_SOUNDS_LIKE_DISTANCE,
    SOUNDS_LIKE_DISTANCES,
)
from synesthete.errors import ConfigError, SynestheteError
from synesthete.index.config import (
    DEFAULT_DELTA_FRACTION,
    DEFAULT_SPEED_VARIANTS,
    parse_speed_variants,
)

if TYPE_CHECKING:
    from synesthete.clients.app import Engine
    from synesthete.clients.progress import RichProgress
    from synesthete.events import Event
    from synesthete.index.builder import BuildReport
    from synesthete.index.config import IndexConfig
    from synesthete.inference.config import EncoderConfig
    from synesthete.inference.torchscript import TorchScriptEncoder

EXIT_ERROR = 2
RECONNECT_TIMEOUT_S = 60.0
LISTEN_INPUT_FAULTS = f"""\
input faults:
  A device that disappears, fails or stalls (no audio for 2 s) is reported at
  once: a status event with "input": "lost" and the reason, and an "unknown"
  event (reason "input_lost") if a track was identified. The live view shows
  it; with --no-tui a note goes to stderr. The websocket server and the live
  view stay up while the device, found again by its name, is reopened 0.5 s
  after the loss, then 1, 2 and 4 s after each failed attempt and every 5 s
  after that; each failed attempt is reported too. Once audio flows again,
  recognition starts afresh. If the device is not back within
  --reconnect-timeout seconds of the loss (default {RECONNECT_TIMEOUT_S:g}), listen exits with
  status 2 and a one-line error.

  A network stream (--input URL) is watched the same way: a dropped connection,
  an HTTP error or a server that sends nothing for 5 s is "lost" with the
  reason, and the URL is opened again on the same schedule until it answers
  with audio or --reconnect-timeout has passed. A URL that never worked (bad
  host, 404, not audio) is one error line and exit status 2.

  NaN and inf samples are replaced by 0 before resampling. They, clipped
  samples (|x| >= 0.999), device overflows (xruns) and ring buffer overruns
  are counted in status events and flagged ("flags") in the second they occur.
"""
EXIT_INTERRUPTED = 130
INDEX_HELP = "index directory (made by `synesthete index build --index DIR`)"
STDIN_NAME = "-"
AUDIO_SUFFIXES_TEXT = "wav, flac, ogg, opus, mp3 and other formats libsndfile reads"
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


def _input_arg(text: str) -> Path | str:
    """``--input``: a URL stays text (a Path would fold its ``//``), anything else is a path."""
    return text if is_url(text) else Path(text)


def _ray_address_arg(text: str) -> str:
    """``--ray``'s address, checked here so a path given after ``--ray`` is one clear line."""
    from synesthete.index.ray_build import parse_ray_address

    try:
        return parse_ray_address(text) or "local"
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _speed_variants_arg(text: str) -> tuple[float, ...]:
    if text.strip().lower() == "none":
        return ()
    try:
        return parse_speed_variants(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _delta_fraction_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a fraction like 0.1 is needed, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {text}")
    return value


def _add_sounds_like_arg(parser: argparse.ArgumentParser, *, flag: str) -> None:
    parser.add_argument(
        flag,
        dest="sounds_like",
        choices=SOUNDS_LIKE_DISTANCES,
        default=DEFAULT_SOUNDS_LIKE_DISTANCE,
        help='track-level distance for "sounds like": mean (mean-to-mean), min (min'
        " point-to-point) or frechet (order-aware, excerpt by excerpt); default"
        f" {DEFAULT_SOUNDS_LIKE_DISTANCE}, chosen by scripts/bench_similar.py",
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
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default $XDG_CONFIG_HOME/synesthete/config.toml, ~/.config when unset)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    index = commands.add_parser(
        "index",
        help="build and maintain a library index",
        description="Build and maintain the library index that identify, listen and similar"
        " search: build, add, remove, compact, stats.",
    )
    index_commands = index.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    for name, text in (
        ("build", "index audio files and folders (replaces the index)"),
        ("add", "add files and folders to an existing index"),
    ):
        sub = index_commands.add_parser(name, help=text, description=text[0].upper() + text[1:])
        sub.add_argument("--index", type=Path, required=True, help=INDEX_HELP)
        sub.add_argument(
            "paths",
            nargs="+",
            metavar="PATH",
            help="audio file, or folder scanned recursively for " + AUDIO_SUFFIXES_TEXT,
        )
        if name == "build":
            sub.add_argument(
                "--index-hop",
                type=float,
                default=DEFAULT_INDEX_HOP_S,
                help=f"index window hop in seconds (default {DEFAULT_INDEX_HOP_S})",
            )
            sub.add_argument(
                "--speed-variants",
                type=_speed_variants_arg,
                default=DEFAULT_SPEED_VARIANTS,
                metavar="S,S,...",
                help="also index every track played at these speeds, for DJ pitch faders and "
                "key changes; 'none' for none (default "
                f"{','.join(f'{x:g}' for x in DEFAULT_SPEED_VARIANTS)}: 3x the windows)",
            )
            sub.add_argument(
                "--layout",
                choices=("compact", "full"),
                default="compact",
                help="compact (default): int8 windows and a coarse ANN refined on them, about "
                "4 MB per hour of audio; full: float32 windows and every window in Annoy, as "
                "indexes before format 3 (about 27 MB per hour)",
            )
            sub.add_argument(
                "--vector-store",
                default="annoy",
                metavar="STORE",
                help="where the nearest-window search lives: annoy (default, files in the index "
                "folder), milvus:///path/file.db (Milvus Lite) or milvus://host:19530 (a Milvus "
                "server); add and remove keep it",
            )
            sub.add_argument(
                "--ray",
                nargs="?",
                const="local",
                default=None,
                type=_ray_address_arg,
                metavar="ADDRESS",
                help="decode and embed on Ray (the [scale] extra): alone, a local Ray on this "
                "machine; auto, ray://host:10001 or host:6379 for a cluster whose nodes see the "
                "files at the same paths. Put it after the paths, or write --ray=ADDRESS",
            )
        sub.add_argument(
            "--report",
            type=Path,
            default=None,
            help="write a JSON report of indexed and skipped files",
        )
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        sub.add_argument(
            "--no-map",
            action="store_true",
            help="do not lay out and store the sonic map with the new generation (saves the"
            " UMAP fit, tens of seconds in a fresh process; 'synesthete map' then lays it"
            " out when asked)",
        )
        if name == "add":
            sub.add_argument(
                "--delta-fraction",
                type=_delta_fraction_arg,
                default=None,
                metavar="F",
                help="write the new tracks as a delta beside the main generation (the add costs"
                " what they cost) while the deltas hold at most this fraction of the main"
                " generation's windows, else a fresh main generation; 0: always a fresh one"
                f" (default {DEFAULT_DELTA_FRACTION:g})",
            )
        _add_encoder_args(sub)
    compact = index_commands.add_parser(
        "compact",
        help="merge the deltas of index add into a fresh main generation",
        description="Merge the deltas that index add wrote beside the main generation into a"
        " fresh main generation (the ANN, versions and sonic map made anew, as index build"
        " would). Nothing is written when there are no deltas.",
    )
    compact.add_argument("--index", type=Path, required=True, help=INDEX_HELP)
    compact.add_argument(
        "--no-map", action="store_true", help="do not lay out and store the sonic map"
    )
    remove = index_commands.add_parser(
        "remove",
        help="remove tracks by id, path or folder",
        description="Remove tracks by id, path or folder (a new generation). A target that"
        " matches no track is reported and the exit status is 2.",
    )
    remove.add_argument("--index", type=Path, required=True, help=INDEX_HELP)
    remove.add_argument(
        "targets",
        nargs="+",
        metavar="ID_OR_PATH",
        help="a track id (as index list or identify print it), a file path or a folder",
    )
    listing = index_commands.add_parser(
        "list",
        help="list tracks and their ids (find one by title, artist, album or path)",
        description="List the indexed tracks with their ids, e.g. to find the id for index"
        " remove or similar.",
    )
    listing.add_argument("--index", type=Path, required=True, help=INDEX_HELP)
    listing.add_argument(
        "--search",
        default=None,
        metavar="TEXT",
        help="only tracks whose title, artist, album or path contains TEXT (any case)",
    )
    listing.add_argument(
        "--format", choices=["txt", "json"], default="txt", help="txt (default) or json"
    )
    stats = index_commands.add_parser(
        "stats", help="show what the index holds", description="Show what the index holds."
    )
    stats.add_argument("--index", type=Path, required=True, help=INDEX_HELP)
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.add_argument(
        "--verify",
        action="store_true",
        help="recompute every checksum first (reads the whole index; small ones always are)",
    )

    identify = commands.add_parser(
        "identify",
        help="identify files, each replayed as a stream",
        description="Identify audio files: each is replayed as its own live stream on a virtual"
        " clock (as fast as the machine allows) and reported as the live loop would. A file"
        " that cannot be read is one line on stderr and the exit status is 2; the rest still"
        " run.",
    )
    identify.add_argument("--index", type=Path, required=True, help=INDEX_HELP)
    identify.add_argument(
        "--format",
        choices=FORMATS,
        default="jsonl",
        help="jsonl: events, one JSON object per line (default); tracklist, txt: a tracklist"
        " per file; csv: one table with a source column; cue: one sheet, a FILE block per"
        " input; json: one document for all files",
    )
    identify.add_argument(
        "--events",
        choices=["core", "all"],
        default="core",
        help="which events the jsonl output carries: core = now_playing and unknown (default);"
        " all adds candidates and sounds_like",
    )
    identify.add_argument("--output", "-o", type=Path, default=None, help="write here, not stdout")
    identify.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="audio file to identify ("
        + AUDIO_SUFFIXES_TEXT
        + "); a folder: every audio file under it, as index build finds them; -: a whole"
        " audio file read from standard input",
    )
    _add_encoder_args(identify)
    _add_matcher_args(identify)
    _add_sounds_like_arg(identify, flag="--sounds-like")

    listen = commands.add_parser(
        "listen",
        help="recognize a live input",
        description="Recognize a live input: an audio device, or a file replayed as one.",
        epilog=LISTEN_INPUT_FAULTS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listen.add_argument("--index", type=Path, required=True, help=INDEX_HELP)
    source = listen.add_mutually_exclusive_group()
    source.add_argument("--device", default=None, help="input device: index or name substring")
    source.add_argument(
        "--input",
        type=_input_arg,
        default=None,
        metavar="FILE|URL",
        help="replay a file as the input (- reads a whole audio file from standard input), or"
        " listen to a network stream: an Icecast/Shoutcast URL (MP3, AAC, Ogg), HLS (.m3u8),"
        " a .pls/.m3u playlist, or any URL FFmpeg opens (rtsp, rtmp, srt...)",
    )
    source.add_argument(
        "--system-audio",
        action="store_true",
        help="recognize what this computer plays: the monitor of the default PulseAudio/"
        "PipeWire sink (for an OBS overlay of your own stream)",
    )
    listen.add_argument(
        "--realtime", action="store_true", help="with --input: pace the replay in real time"
    )
    listen.add_argument(
        "--speed",
        type=float,
        default=None,
        metavar="FACTOR",
        help="with --input: pace the replay FACTOR times faster than real time, through the"
        " live loop (implies --realtime; for soak tests)",
    )
    listen.add_argument(
        "--loop",
        action="store_true",
        help="with --input: replay the file forever (implies --realtime; stop with --seconds)",
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
    listen.add_argument(
        "--no-tui",
        action="store_true",
        help="no live view: JSONL events on stdout (see --events), notes and the overlay URL"
        " on stderr",
    )
    listen.add_argument(
        "--events",
        choices=["core", "all"],
        default="core",
        help="which events the stdout JSONL carries with --no-tui: core = now_playing and"
        " unknown (default); all adds candidates, sounds_like and status (--jsonl FILE always"
        " gets all)",
    )
    listen.add_argument("--jsonl", type=Path, default=None, help="also append events here")
    listen.add_argument(
        "--tracklist", type=Path, default=None, help="write the session's tracklist here on exit"
    )
    listen.add_argument(
        "--plays",
        type=Path,
        default=None,
        metavar="FILE",
        help="append one line per finished play (UTC start and end, track, confidence, offsets"
        " covered): JSONL, or CSV when FILE ends in .csv; flushed per line (broadcast monitoring)",
    )
    listen.add_argument("--seconds", type=float, default=None, help="stop after this much audio")
    listen.add_argument(
        "--reconnect-timeout",
        type=float,
        default=RECONNECT_TIMEOUT_S,
        metavar="SECONDS",
        help="how long to keep reopening a lost device before exiting with status 2"
        f" (default {RECONNECT_TIMEOUT_S:g}; 0: exit at once; inf: never give up)",
    )
    _add_encoder_args(listen)
    _add_matcher_args(listen)
    _add_sounds_like_arg(listen, flag="--sounds-like")

    similar = commands.add_parser(
        "similar",
        help="library tracks that sound like a track or an audio file",
        description="List the library tracks nearest by sound to TRACK_OR_FILE: a track id,"
        " the path of an indexed track, or any audio file (embedded with the index's encoder)."
        " The query track and its duplicates are left out.",
    )
    similar.add_argument("--index", type=Path, required=True, help=INDEX_HELP)
    similar.add_argument(
        "target",
        metavar="TRACK_OR_FILE",
        nargs="?",
        help="a track id, an indexed track's path, or any audio file",
    )
    similar.add_argument(
        "--after",
        nargs="+",
        metavar="TRACK",
        default=None,
        help="up next instead: tracks (ids or indexed paths) already played, oldest first;"
        " lists tracks to play after them",
    )
    similar.add_argument("--k", type=int, default=10, help="how many tracks (default 10)")
    _add_sounds_like_arg(similar, flag="--distance")
    similar.add_argument(
        "--format", choices=["txt", "json"], default="txt", help="txt (default) or json"
    )
    _add_encoder_args(similar)

    sonic_map = commands.add_parser(
        "map",
        help="draw the library's sonic map (PNG or one HTML page)",
        description="Lay the library's tracks out in 2-D by how they sound (UMAP over each"
        " track's vector in the 'sounds like' space; the same seed gives the same map) and"
        " write it: OUT.png (matplotlib, coloured by album or artist) or OUT.html (one"
        " self-contained page; hover and click for neighbours). `listen --serve` shows it"
        " live at /map.",
    )
    sonic_map.add_argument("--index", type=Path, required=True, help=INDEX_HELP)
    sonic_map.add_argument(
        "--out", type=Path, required=True, help="the file to write: .png or .html"
    )
    sonic_map.add_argument("--seed", type=int, default=None, help="layout seed (default fixed)")

    commands.add_parser(
        "devices",
        help="list audio input devices",
        description="List the audio input devices listen --device can open (by number or by"
        " part of the name).",
    )

    watch = commands.add_parser(
        "watch",
        help="print the events of a running server (websocket client)",
        description="Print the events of a running `synesthete listen --serve` (or demo) as"
        " lines or JSONL; reconnects when the server goes away.",
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

    demo = commands.add_parser(
        "demo",
        help="build a demo library and replay a live set",
        description="Synthesize a small tagged library, index it (about a minute, first run"
        " only), then replay a DJ-style set of it through listen with the live view and the"
        " websocket server and overlay.",
    )
    demo.add_argument("--dir", type=Path, default=Path("demo-data"), help="where demo files go")
    demo.add_argument(
        "--serve",
        default="127.0.0.1:8765",
        metavar="HOST:PORT",
        help="where the websocket server and /overlay listen (default 127.0.0.1:8765)",
    )
    demo.add_argument(
        "--no-tui",
        action="store_true",
        help="no live view: JSONL events on stdout, progress and the tracklist on stderr",
    )
    demo.add_argument("--fast", action="store_true", help="replay as fast as possible")

    config = commands.add_parser(
        "config",
        help="show the effective settings of a command",
        description="Settings come from the built-in defaults, then the config file"
        " ($XDG_CONFIG_HOME/synesthete/config.toml, or --config PATH; keys are the long option"
        " names with dashes turned into underscores, a [command] table overrides the top level),"
        " then the flags.",
    )
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_show = config_commands.add_parser(
        "show",
        help="print each option of COMMAND, its value and where it came from",
        description="Print each option of COMMAND (e.g. `listen`, `index build`), its effective"
        " value and where it came from: default, file (path:line) or flag.",
    )
    config_show.add_argument(
        "words", nargs=argparse.REMAINDER, metavar="COMMAND [FLAGS]", help="the command"
    )
    return parser


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` over the config file's values (``--config`` or the XDG default)."""
    from synesthete.clients import config_file

    parser = build_parser()
    flag = config_file.config_flag(argv)
    path = Path(flag).expanduser() if flag is not None else config_file.default_path()
    config = config_file.load(path, required=flag is not None)
    config_file.check(config, parser)
    words, _ = config_file.command_path(parser, argv)
    if words == ["config", "show"]:
        rest = argv[argv.index("show") + 1 :]
        target = build_parser()
        target_words, command = config_file.command_path(target, rest)
        if not target_words or target_words[0] == "config":
            raise ConfigError("config show needs a command, e.g. `synesthete config show listen`")
        _, settings = config_file.apply(config, target, rest)
        config_file.relax_positionals(command)
        shown = target.parse_args(rest)
        source = f"# config file: {config.path}\n" if config.path else "# no config file\n"
        sys.stdout.write(source + config_file.show(shown, settings, words=target_words))
        return argparse.Namespace(command="config", config_command="show", shown=True)
    config_file.apply(config, parser, argv)
    return parser.parse_args(argv)


def _cmd_config(args: argparse.Namespace) -> int:
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parse(argv)
    except SynestheteError as err:
        print(f"synesthete: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "config": _cmd_config,
        "index": _cmd_index,
        "identify": _cmd_identify,
        "listen": _cmd_listen,
        "similar": _cmd_similar,
        "map": _cmd_map,
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
    code = main()
    sources = sys.modules.get("synesthete.stream.sources")
    if sources is not None and sources.portaudio_calls_in_flight():
        # `listen` gave up on a device whose stop or reopen is still stuck in
        # a frozen sound server; the normal interpreter teardown would crash
        # or hang in PortAudio's threads. Leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


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
    for device in devices:
        print(
            f"{device.index:3d}  {device.name}  ({device.hostapi}, "
            f"{device.max_input_channels} in, {device.default_sample_rate_hz:g} Hz)"
        )
    _print_server_sources()
    return 0


def _print_server_sources() -> None:
    """The sound server's sources, monitors marked as such (``listen --system-audio``)."""
    from synesthete.stream.pulse import server_sources

    try:
        sources = server_sources()
    except SynestheteError:
        return  # no PulseAudio/PipeWire here: PortAudio's list is all there is
    if not sources:
        return
    print("sound server sources (PulseAudio/PipeWire):")
    for source in sources:
        if source.is_monitor:
            what = f"monitor of sink {source.sink}: what the computer plays there"
            if source.is_default_sink_monitor:
                what += " (default sink: listen --system-audio records this)"
        else:
            what = "input"
        spec = f", {source.spec}" if source.spec else ""
        print(f"  -  {source.name}  ({what}{spec})")


def _cmd_index(args: argparse.Namespace) -> int:
    from synesthete.clients.progress import RichProgress
    from synesthete.index import builder
    from synesthete.index.config import IndexConfig

    if args.index_command == "stats":
        stats = builder.index_stats(args.index, verify=args.verify)
        if args.json:
            print(json.dumps(stats, indent=2, default=str))
        else:
            width = max(map(len, stats))
            for key, value in stats.items():
                if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                    # One pair of versions per line, aligned under the first.
                    print(f"{key:>{width}}: {value[0]}")
                    for item in value[1:]:
                        print(f"{'':>{width}}  {item}")
                elif isinstance(value, dict):
                    # mb_per_hour_by_file: one "name size" pair per file, on one line.
                    print(f"{key:>{width}}: " + ", ".join(f"{k} {v}" for k, v in value.items()))
                else:
                    print(f"{key:>{width}}: {value}")
        return 0
    if args.index_command == "list":
        return _list_tracks(args.index, search=args.search, fmt=args.format)
    if args.index_command == "compact":
        report = builder.compact_index(
            args.index, config=IndexConfig(sonic_map=False) if args.no_map else None
        )
        for note in report.notes:
            print(f"synesthete: {note}", file=sys.stderr)
        print(report.summary())
        return 0
    if args.index_command == "remove":
        report = builder.remove_from_index(args.index, list(args.targets))
        for target, reason in report.skipped:
            print(f"synesthete: error: not removed {target}: {reason}", file=sys.stderr)
        for note in report.notes:
            print(f"synesthete: {note}", file=sys.stderr)
        print(report.summary())
        return EXIT_ERROR if report.skipped else 0

    from synesthete.inference.torchscript import TorchScriptEncoder

    encoder = TorchScriptEncoder(config=_encoder_config(args))
    progress = None if args.quiet else RichProgress()
    try:
        with progress if progress is not None else contextlib.nullcontext():
            if args.index_command == "build":
                from synesthete.index.compact import LAYOUTS
                from synesthete.index.milvus_store import parse_vector_store

                config = IndexConfig(
                    index_hop_s=args.index_hop,
                    speed_variants=args.speed_variants,
                    sonic_map=not args.no_map,
                )
                if args.ray is not None:
                    report = _build_on_ray(args, encoder=encoder, config=config, progress=progress)
                else:
                    report = builder.build_index(
                        args.index,
                        [Path(p) for p in args.paths],
                        encoder=encoder,
                        config=config,
                        progress=progress,
                        layout=LAYOUTS[args.layout],
                        vector_store=parse_vector_store(args.vector_store),
                    )
            else:
                report = builder.add_to_index(
                    args.index,
                    [Path(p) for p in args.paths],
                    encoder=encoder,
                    progress=progress,
                    config=_add_config(args),
                )
    except builder.NothingIndexedError as err:
        # Every file was bad: say why for each (and in the report) before the error line.
        _write_build_report(err.report, args.report, summary=False)
        raise
    _write_build_report(report, args.report, summary=True)
    return 0


def _add_config(args: argparse.Namespace) -> IndexConfig | None:
    """``index add``'s settings: ``None`` (the index's own, map as the main generation has
    it) unless ``--no-map`` or ``--delta-fraction`` say otherwise."""
    from synesthete.index.config import IndexConfig

    if not args.no_map and args.delta_fraction is None:
        return None
    return IndexConfig(
        sonic_map=not args.no_map,
        **({} if args.delta_fraction is None else {"delta_fraction": args.delta_fraction}),
    )


def _build_on_ray(
    args: argparse.Namespace,
    *,
    encoder: TorchScriptEncoder,
    config: IndexConfig,
    progress: RichProgress | None,
) -> BuildReport:
    """``index build --ray``: each Ray actor loads the same model, with one torch thread (a
    cluster gives one actor per CPU)."""
    import functools

    from synesthete.index.compact import LAYOUTS
    from synesthete.index.milvus_store import parse_vector_store
    from synesthete.index.ray_build import RayOptions, build_index_ray
    from synesthete.inference.torchscript import TorchScriptEncoder

    worker_config = _encoder_config(args, default_threads=1)
    return build_index_ray(
        args.index,
        [Path(p) for p in args.paths],
        encoder_factory=functools.partial(TorchScriptEncoder, config=worker_config),
        encoder=encoder,
        config=config,
        ray_options=RayOptions(address=None if args.ray == "local" else args.ray),
        progress=progress,
        layout=LAYOUTS[args.layout],
        vector_store=parse_vector_store(args.vector_store),
    )


def _list_tracks(index: Path, *, search: str | None, fmt: str) -> int:
    """``index list``: one line per track (id, duration, artist - title, path), or JSON."""
    from synesthete.index.store import Library

    with Library.open(index) as library:
        tracks = [record.to_info() for record in library.records()]
    if search is not None:
        needle = search.casefold()
        tracks = [
            t
            for t in tracks
            if any(
                needle in (field or "").casefold() for field in (t.title, t.artist, t.album, t.path)
            )
        ]
    tracks.sort(key=lambda t: t.id)
    if fmt == "json":
        json.dump([t.to_payload() for t in tracks], sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    width = len(str(tracks[-1].id)) if tracks else 1
    for t in tracks:
        minutes, seconds = divmod(int(t.duration_s or 0), 60)
        label = f"{t.artist} - {t.title}" if t.artist else t.title
        print(f"{t.id:>{width}}  {minutes:d}:{seconds:02d}  {label}  ({t.path})")
    if not tracks and search is not None:
        print(f"synesthete: no track matches {search!r}", file=sys.stderr)
        return 1
    return 0


def _write_build_report(report: BuildReport, path: Path | None, *, summary: bool) -> None:
    """Print a ``skipped PATH: REASON`` line per bad file, the summary, then write JSON.

    Skipped lines go to stderr, the summary to stdout, the JSON to ``--report``.
    """
    for skipped, reason in report.skipped:
        print(f"skipped {skipped}: {reason}", file=sys.stderr)
    for note in report.notes:
        print(f"synesthete: {note}", file=sys.stderr)
    if summary:
        print(report.summary())
    if path is not None:
        try:
            path.write_text(report.to_json(), encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"{path}: cannot write the report: {err.strerror or err}") from None


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
        sounds_like_distance=args.sounds_like,
    )


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8") as handle:
        yield handle


def _identify_inputs(names: list[str]) -> Iterator[str]:
    """The inputs of ``identify``, as it reports them: a file (or ``-``) as given, a folder
    as the audio files under it (the scan ``index build`` does), each under the folder's
    name as given. A problem in a folder is one ``skipped`` line on stderr."""
    from synesthete.index.scan import iter_audio_files

    for name in names:
        if name == STDIN_NAME or not Path(name).is_dir():
            yield name
            continue

        def skipped(path: Path, reason: str) -> None:
            print(f"synesthete: skipped {path}: {reason}", file=sys.stderr)

        root = Path(os.path.normpath(Path(name).expanduser().absolute()))
        found = False
        for path in iter_audio_files([name], on_problem=skipped):
            found = True
            try:
                yield str(Path(name) / path.relative_to(root))
            except ValueError:  # reached through a symlink that leaves the folder
                yield str(path)
        if not found:
            raise ConfigError(f"{name}: no audio files in this folder")


def _read_stdin() -> bytes:
    """All of standard input: soundfile needs to seek, which a pipe cannot."""
    if sys.stdin is None or sys.stdin.isatty():
        raise ConfigError("- reads audio from standard input, but it is a terminal; pipe a file in")
    return sys.stdin.buffer.read()


def _cmd_identify(args: argparse.Namespace) -> int:
    from synesthete.clients.identify import identify_file
    from synesthete.clients.jsonl import JsonlWriter
    from synesthete.clients.listen import event_types
    from synesthete.clients.tracklist import TracklistWriter, build_tracklist

    if list(args.files).count(STDIN_NAME) > 1:
        raise ConfigError("standard input (-) can be read only once")
    stdin = _read_stdin() if STDIN_NAME in args.files else None
    engine = _open_engine(args)
    failures = 0
    try:
        with _output(args.output) as out:
            writer = JsonlWriter(out, types=event_types(args.events))
            title = args.files[0] if len(args.files) == 1 else f"{len(args.files)} inputs"
            tracklists = (
                None
                if args.format == "jsonl"
                else TracklistWriter(out, fmt=args.format, title=title)
            )
            for name in _identify_inputs(list(args.files)):
                data = stdin if name == STDIN_NAME else None
                try:
                    if tracklists is None:
                        for event in identify_file(engine, name, data=data):
                            writer.write(event)
                    else:
                        events: list[Event] = list(identify_file(engine, name, data=data))
                        tracklists.write(build_tracklist(events, source=name))
                except SynestheteError as err:
                    failures += 1
                    print(f"synesthete: error: {err}", file=sys.stderr)
            if tracklists is not None:
                tracklists.close()
    finally:
        engine.close()
    return EXIT_ERROR if failures else 0


def _cmd_listen(args: argparse.Namespace) -> int:
    url = args.input if isinstance(args.input, str) else None
    if (args.realtime or args.speed is not None or args.loop) and args.input is None:
        raise ConfigError("--realtime, --speed and --loop only apply with --input FILE")
    if url is not None and (args.realtime or args.loop):
        raise ConfigError(
            "--realtime and --loop apply to files; a stream comes at its own pace (--speed lets"
            " a stream that comes faster than real time through that much faster)"
        )
    if args.speed is not None and not 0 < args.speed < float("inf"):
        raise ConfigError(f"--speed must be a finite number > 0, got {args.speed:g}")
    if args.system_audio and (args.realtime or args.speed is not None or args.loop):
        raise ConfigError("--realtime, --speed and --loop only apply with --input")
    if not args.reconnect_timeout >= 0:  # also refuses nan
        raise ConfigError(
            f"--reconnect-timeout must be >= 0 seconds (or inf), got {args.reconnect_timeout:g}"
        )
    from synesthete.clients.listen import ListenOptions, listen

    stdin = _read_stdin() if args.input == Path(STDIN_NAME) else None
    options = ListenOptions(
        device=args.device,
        input_path=args.input if isinstance(args.input, Path) else None,
        input_url=url,
        system_audio=args.system_audio,
        plays_path=args.plays,
        input_data=stdin,
        realtime=url is None and (args.realtime or args.speed is not None or args.loop),
        speed=1.0 if args.speed is None else args.speed,
        loop=args.loop,
        serve=args.serve,
        token=args.token,
        allowed_origins=tuple(args.allow_origin),
        tui=not args.no_tui,
        jsonl_path=args.jsonl,
        tracklist_path=args.tracklist,
        events=args.events,
        max_seconds=args.seconds,
        reconnect_timeout_s=args.reconnect_timeout,
    )
    engine = _open_engine(args)
    try:
        return asyncio.run(listen(engine=engine, options=options))
    finally:
        engine.close()


def _cmd_similar(args: argparse.Namespace) -> int:
    from synesthete.clients.similar import resolve_query, similar_tracks, write_similar
    from synesthete.index.store import Library

    if args.k < 1:
        raise ConfigError(f"--k must be >= 1, got {args.k}")
    if (args.target is None) == (args.after is None):
        raise ConfigError("similar needs TRACK_OR_FILE or --after TRACK ..., not both")
    if args.after is not None:
        from synesthete.clients.similar import up_next_tracks, write_up_next

        with Library.open(args.index) as library:
            history, following = up_next_tracks(library, args.after, k=args.k)
            write_up_next(history, following, sys.stdout, fmt=args.format)
        return 0
    with Library.open(args.index) as library:
        query = resolve_query(
            library, args.target, encoder_config=_encoder_config(args, default_threads=1)
        )
        results = similar_tracks(library, query, k=args.k, distance=args.sounds_like)
        write_similar(query, results, sys.stdout, fmt=args.format, distance=args.sounds_like)
    return 0


def _cmd_map(args: argparse.Namespace) -> int:
    from synesthete.clients.map import write_map
    from synesthete.index.sonic_map import DEFAULT_MAP_SEED
    from synesthete.index.store import Library

    seed = DEFAULT_MAP_SEED if args.seed is None else args.seed
    with Library.open(args.index) as library:
        drawn = write_map(library, args.out, seed=seed)
    print(
        f"synesthete: map of {len(drawn.tracks)} tracks ({drawn.space} space,"
        f" {'stored' if drawn.stored else 'computed'} layout, 10-NN kept"
        f" {drawn.trustworthiness:.0%}) written to {args.out}",
        file=sys.stderr,
    )
    return 0


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
