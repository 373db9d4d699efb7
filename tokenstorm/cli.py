"""The thin `tokenstorm` CLI: mock, run, options, report, compare, sweep, calibrate."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .core.assets import find, locustfile

USAGE = """tokenstorm <command> ...
  mock [mock_server flags]            the bundled mock (python -m mock_server; --config realistic-8b|chaos|...)
  run [-f staged|tool_agent] [locust flags]  locust -f <shipped chat_stream.py> ...; `run --help`: every option
  options                             tokenstorm's own options alone (also for `locust -f ... ` users)
  report|compare|tokens ...           python -m analysis ...
  sweep --host URL --levels 1,2,4,...  runs per concurrency level (or --rates) until saturation
  calibrate [--levels 10,50,100,...]  this machine's client timing error against the exact mock
  --version                           tokenstorm's and Locust's versions
"""


def version() -> str:
    """`tokenstorm X (locust Y)`: the installed distributions' versions."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    def of(name: str) -> str:
        try:
            return dist_version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"tokenstorm {of('tokenstorm')} (locust {of('locust')}, Python {sys.version.split()[0]})"


def run_help() -> str:
    """Locust's --help with tokenstorm's options in it (Locust prints help before it loads the
    locustfile that registers them, so `locust -f ... --help` has none of them)."""
    from locust.argument_parser import get_empty_argument_parser, setup_parser_arguments

    from .loadgen.options import add_arguments

    parser = get_empty_argument_parser(add_help=True)
    setup_parser_arguments(parser)
    add_arguments(parser)
    parser.prog = "tokenstorm run"
    text = parser.format_help()
    return text.replace("Usage: locust ", "Usage: tokenstorm run ", 1)


RUN_FLAGS = """
tokenstorm run's own flags (the rest is Locust's and tokenstorm's options, below):
  --web            open Locust's web UI instead of running headless
  --locust-stats   print Locust's stats tables instead of tokenstorm's live progress line
By default `tokenstorm run` is headless with --progress --full-report --only-summary: one live
line while it runs, then the report, with report.html, report.md and plots/ in the results folder;
without -r, all -u users start at once.
"""


def run_args(rest: list[str]) -> list[str]:
    """Locust's arguments for `tokenstorm run ARGS`: headless with the live line and the full
    report unless --web or --locust-stats say otherwise; without -r, every user at once."""
    web, tables = "--web" in rest, "--locust-stats" in rest
    out = [arg for arg in rest if arg not in ("--web", "--locust-stats")]
    flags = ["--full-report"] + ([] if web else ["--headless"] + ([] if tables else ["--progress", "--only-summary"]))
    out += [flag for flag in flags if flag not in out]
    if not any(arg in ("-r", "--spawn-rate") or arg.startswith("--spawn-rate=") for arg in out):
        users = next((out[i + 1] for i, arg in enumerate(out[:-1]) if arg in ("-u", "--users")), None)
        if users is not None:  # every stream from the start: the run measures the concurrency asked for
            out += ["-r", users]
    return out


def _run(rest: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in rest):
        print(RUN_FLAGS + "\n" + run_help(), end="")
        return 0
    rest = run_args(rest)
    for i, arg in enumerate(rest[:-1]):  # -f NAME: a shipped locustfile by name (chat_stream, staged, tool_agent)
        if arg in ("-f", "--locustfile"):
            name = rest[i + 1]
            rest[i + 1] = str(locustfile(name) if locustfile(name).is_file() else find(name))
            break
    else:
        rest = ["-f", str(locustfile("chat_stream")), *rest]
    # the same interpreter's Locust, whatever bin/ the install put scripts in
    os.execv(sys.executable, [sys.executable, "-m", "locust", *rest])
    return 0  # not reached


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(version())
        return 0
    command, rest = argv[0], argv[1:]
    if command == "mock":
        from mock_server.cli import main as mock_main

        return mock_main(rest)
    if command == "run":
        return _run(rest)
    if command == "options":
        from .loadgen.options import describe

        print(describe(), end="")
        return 0
    if command in ("report", "compare", "tokens"):
        from analysis.__main__ import main as analysis_main

        return analysis_main([command, *rest])
    if command == "sweep":
        return _sweep(rest)
    if command == "calibrate":
        return _calibrate(rest)
    print(f"tokenstorm: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


def _sweep(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="tokenstorm sweep", description="Runs over concurrency levels (or arrival "
                                "rates) into one folder, until saturation; then the throughput-vs-latency curve.")
    p.add_argument("--host", required=True)
    levels = p.add_mutually_exclusive_group(required=True)
    levels.add_argument("--levels", type=_floats, help="concurrency levels, e.g. 1,2,4,8,16,32")
    levels.add_argument("--rates", type=_floats, help="open-loop arrival rates (req/s), e.g. 1,2,4,8")
    p.add_argument("--cap", type=int, default=0, help="with --rates: streams in flight at most (users)")
    p.add_argument("--requests", type=int, default=0, help="requests per level (default: 20 per stream, at least "
                   "100; or --duration)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds per level instead of a request count")
    p.add_argument("--out", default="", help="folder for the runs and the curve (default results/sweep-<time>)")
    p.add_argument("--max-ttft-p99-ms", type=float, default=None, help="stop when TTFT P99 goes over this")
    p.add_argument("--max-error-rate", type=float, default=0.05, help="stop when the error rate goes over this")
    p.add_argument("--min-gain", type=float, default=0.05, help="stop when throughput rises less than this")
    p.add_argument("--no-calibrate", action="store_true", help="skip the client calibration attached to the sweep")
    args, locust_args = p.parse_known_args(argv)
    if locust_args and locust_args[0] == "--":
        locust_args = locust_args[1:]
    from .sweep import calibrate, sweep

    out = Path(args.out or time.strftime("results/sweep-%Y%m%d-%H%M%S"))
    calibration = None if args.no_calibrate else calibrate([10, 100], requests_per_user=3)
    rate_mode = args.rates is not None
    levels = args.rates if rate_mode else args.levels
    result = sweep(args.host, levels, out, args.requests, args.duration, rate_mode, args.max_ttft_p99_ms,
                   args.max_error_rate, args.min_gain, locust_args, calibration, args.cap)
    return 0 if result["points"] else 1


def _calibrate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="tokenstorm calibrate", description="The client's own timing error "
                                "against the bundled mock with --jitter 0, at rising concurrency.")
    p.add_argument("--levels", type=_floats, default=[10, 50, 100, 200, 500, 1000])
    p.add_argument("--requests-per-stream", type=int, default=4, help="the first round is left out")
    p.add_argument("--ttft-ms", type=float, default=100.0)
    p.add_argument("--itl-ms", type=float, default=20.0)
    p.add_argument("--json", default="", help="also write the result to this file")
    args = p.parse_args(argv)
    from .sweep import calibrate

    result = calibrate([int(x) for x in args.levels], args.requests_per_stream, args.ttft_ms, args.itl_ms)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0
