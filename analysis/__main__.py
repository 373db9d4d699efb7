"""`python -m analysis report|compare|sweep|tokens ...`: the analysis CLI (see README)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .stats import RecordsError, format_report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description="tokenstorm results analysis")
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser("report", help="report.md, report.html, summary.json and plots/ for a results folder")
    report.add_argument("folder")
    report.add_argument("--warmup", type=float, default=0.0, metavar="S",
                        help="leave out requests sent in the first S seconds")
    report.add_argument("--window", type=float, default=5.0, metavar="S", help="time-series window in seconds")
    report.add_argument("--per-request", action="store_true", help="include every request in summary.json")
    compare = sub.add_parser("compare", help="base vs new per metric and percentile, with bootstrap intervals")
    compare.add_argument("base")
    compare.add_argument("new")
    compare.add_argument("--threshold", type=float, default=10.0, metavar="PCT",
                         help="a significant change worse than this is a regression (exit code 1)")
    compare.add_argument("--warmup", type=float, default=0.0, metavar="S")
    compare.add_argument("--resamples", type=int, default=1000)
    compare.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    sweep = sub.add_parser("sweep", help="throughput vs latency over several runs, with the knee marked")
    sweep.add_argument("folders", nargs="+", help="results folders, or one folder holding them")
    sweep.add_argument("--out", default="", help="folder for sweep.csv/json/png (default: the runs' parent)")
    sweep.add_argument("--warmup", type=float, default=0.0, metavar="S")
    tokens = sub.add_parser("tokens", help="token accounting of API-gateway logs (JSON lines)")
    tokens.add_argument("file", nargs="?", help="the log file")
    tokens.add_argument("--csv", metavar="FILE", help="also write the per-entry counts as CSV")
    tokens.add_argument("--tokenizer", metavar="PATH", help="count with this local Hugging Face tokenizer.json "
                        "(the model's) instead of tiktoken cl100k_base")
    tokens.add_argument("--serve", action="store_true", help="answer POSTed entries over HTTP instead")
    tokens.add_argument("--port", type=int, default=8888)
    tokens.add_argument("--host", default="127.0.0.1")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "report":
            from .report import write_report
            from .results import load_results

            summary = write_report(load_results(args.folder, args.warmup), args.window, args.per_request)
            print(format_report(summary, f"tokenstorm report: {args.folder}"))
            print(f"wrote {args.folder}/report.md, report.html, summary.json, plots/")
        elif args.command == "compare":
            from .compare import compare, format_comparison
            from .context import config_differences
            from .results import load_results

            base, new = load_results(args.base, args.warmup), load_results(args.new, args.warmup)
            result = compare(base.records, new.records, args.threshold, args.resamples, slos=base.slos)
            differences = config_differences(base.metadata, new.metadata)
            result["config_differences"] = [{"setting": k, "base": a, "new": b} for k, a, b in differences]
            print(format_comparison(result, args.base, args.new, differences))
            if args.json:
                Path(args.json).write_text(json.dumps(result, indent=1, default=str))
            return 1 if result["regressions"] else 0
        elif args.command == "sweep":
            from .curve import knee, plot_sweep, sweep_points, verdict
            from .results import run_folders

            folders = run_folders(args.folders)
            points = sweep_points(folders, args.warmup)
            out = Path(args.out) if args.out else folders[0].parent
            out.mkdir(parents=True, exist_ok=True)
            k = knee(points)
            points.to_csv(out / "sweep.csv", index=False)
            line = verdict(points, k)
            (out / "sweep.json").write_text(json.dumps({"points": points.to_dict("records"), "knee_index": k,
                                                        "knee": None if k is None else points.iloc[k].to_dict(),
                                                        "saturated": k is not None, "verdict": line},
                                                       indent=1, default=str))
            plot_sweep(points, out / "sweep.png", k)
            print(points.to_string(index=False))
            print(f"{line}; wrote {out}/sweep.csv, sweep.json, sweep.png")
        elif args.command == "tokens":
            from tokenstorm.core import tokenizer

            from .tokens import count_file, serve

            if args.tokenizer:
                try:
                    tokenizer.use(args.tokenizer)
                except tokenizer.TokenizerError as exc:
                    print(f"analysis tokens: {exc}", file=sys.stderr)
                    return 2
            if args.serve:
                serve(args.port, args.host)
                return 0
            if not args.file:
                print("analysis tokens: give a log FILE (or --serve)", file=sys.stderr)
                return 2
            try:
                result = count_file(args.file)
            except OSError as exc:
                print(f"analysis tokens: {args.file}: cannot read it ({exc.strerror or exc})", file=sys.stderr)
                return 2
            for skip in result["skipped"]:
                print(f"analysis tokens: {args.file} line {skip['line']}: skipped: {skip['error']}", file=sys.stderr)
            if args.csv:
                import pandas as pd

                pd.DataFrame(result["entries"]).to_csv(args.csv, index=False)
            print(json.dumps(result, indent=1))
    except RecordsError as exc:
        print(f"analysis: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
