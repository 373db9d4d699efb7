"""`python -m analysis report DIR` (and more subcommands as they land)."""

from __future__ import annotations

import argparse
import sys

from .stats import RecordsError, format_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description="tokenstorm results analysis")
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser("report", help="report.md, report.html, summary.json and plots/ for a results folder")
    report.add_argument("folder")
    report.add_argument("--warmup", type=float, default=0.0, metavar="S",
                        help="leave out requests sent in the first S seconds")
    report.add_argument("--window", type=float, default=5.0, metavar="S", help="time-series window in seconds")
    report.add_argument("--per-request", action="store_true", help="include every request in summary.json")
    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            from .report import write_report
            from .results import load_results

            results = load_results(args.folder, args.warmup)
            summary = write_report(results, args.window, args.per_request)
            print(format_report(summary, f"tokenstorm report: {args.folder}"))
            print(f"wrote {args.folder}/report.md, report.html, summary.json, plots/")
    except RecordsError as exc:
        print(f"analysis: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
