"""What a run was: target, load, request, timing, versions, processes and the client's self-check,
from its metadata (run-master.json or run-local.json, written by tokenstorm.loadgen.session), for
the head of a report and the config differences of a comparison."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd

from tokenstorm.core.records import CANCELLED

IGNORED_DIFFERENCES = ("results_dir", "started", "ended", "records")  # differ between any two runs


def _seconds(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return "until stopped"
    return f"{value:,.1f} s" if value < 120 else f"{value / 60:,.1f} min"


def load_description(metadata: dict) -> str:
    """Users (closed loop) or the arrival schedule (open loop), and the request budget."""
    settings = metadata.get("settings") or {}
    users = metadata.get("users")
    arrivals = settings.get("arrivals")
    if arrivals and arrivals.get("stages"):
        stages = ", then ".join(f"{rate:g} req/s " + ("until stopped" if math.isinf(duration) else
                                                       f"for {_seconds(duration)}")
                                for duration, rate in arrivals["stages"])
        text = f"open loop, {arrivals.get('process', '')} arrivals: {stages}"
        if users:
            text += f"; at most {users} streams in flight"
    elif users:
        text = f"{users} users (closed loop)"
        if metadata.get("spawn_rate"):
            text += f", started at {metadata['spawn_rate']:g}/s"
    else:
        text = "-"
    total = settings.get("total_requests")
    return text + (f"; {total:,} requests" if total else "")


def self_check(metadata: dict) -> str:
    """The client's self-check verdict over all of the run's processes."""
    clients = {w: facts.get("client") for w, facts in (metadata.get("workers") or {}).items()}
    if not clients and metadata.get("client") is not None:
        clients = {metadata.get("worker_id", "local"): metadata["client"]}
    if not clients:
        return "-"
    warned = {w: c for w, c in clients.items() if c and c.get("warnings")}
    missing = [w for w, c in clients.items() if not c]
    if warned:
        text = "WARNING: timings may be distorted on " + ", ".join(
            f"{w} ({len(c['warnings'])} warning{'s' * (len(c['warnings']) > 1)})" for w, c in warned.items())
    else:
        cpu = [c.get("cpu_pct_mean") for c in clients.values() if c and c.get("cpu_pct_mean") is not None]
        lag = [c.get("loop_lag_ms_p99") for c in clients.values() if c and c.get("loop_lag_ms_p99") is not None]
        text = "passed"
        if cpu:
            text += f" (client CPU mean up to {max(cpu):g}%, event-loop lag P99 up to {max(lag or [0]):g} ms)"
    if missing:
        text += f"; no self-check from {', '.join(missing)}"
    return text


DEFAULT_TOKENIZER = "cl100k_base"


def _sources(records: pd.DataFrame) -> tuple[int, dict[str, int]]:
    """(ok requests with an output count, {where counts came from: requests}); a tokenizer count is
    `tokenizer:NAME` (records written before the tokenizer column say only `tokenizer`)."""
    if not len(records) or "output_tokens_source" not in records.columns:
        return 0, {}
    ok = records[(records["status"] == "ok") & records["output_tokens_source"].astype(str).ne("")]
    source = ok["output_tokens_source"].astype(str)
    if "tokenizer" in ok.columns:
        names = ok["tokenizer"].fillna("").astype(str)
        source = source.where(source != "tokenizer", "tokenizer:" + names.where(names != "", DEFAULT_TOKENIZER))
    else:
        source = source.replace("tokenizer", f"tokenizer:{DEFAULT_TOKENIZER}")
    return len(ok), {str(k): int(v) for k, v in source.value_counts().items()}


def token_count_warning(records: pd.DataFrame) -> str:
    """The report's headline warning when output token counts are estimates by a tokenizer that may not be
    the model's (tiktoken cl100k_base) or by chunk counts; '' when every count is the server's usage or
    the --tokenizer given."""
    total, sources = _sources(records)
    guessed = sources.get(f"tokenizer:{DEFAULT_TOKENIZER}", 0)
    chunks = sources.get("chunks", 0)
    if not total or not (guessed or chunks):
        return ""
    parts = []
    if guessed:
        parts.append(f"{guessed / total:.0%} of output token counts ({guessed:,} of {total:,} requests) are "
                     f"estimates by tiktoken {DEFAULT_TOKENIZER}, which may not be the model's tokenizer")
    if chunks:
        parts.append(f"{chunks / total:.0%} ({chunks:,}) are chunk counts (no text to count)")
    return ("WARNING: the server sent no usage, so " + "; ".join(parts) + ": TPOT and tokens/s may be off by 10% "
            "or more. Pass --tokenizer PATH (the model's tokenizer.json) or let the server send usage "
            "(stream_options.include_usage).")


def token_sources(records: pd.DataFrame) -> str:
    """Where the output token counts came from, for the run header."""
    total, sources = _sources(records)
    if not total:
        return "-"
    return ", ".join(f"{name} {n / total:.0%}" for name, n in sorted(sources.items(), key=lambda kv: -kv[1]))


def run_context(metadata: dict, records: pd.DataFrame, warmup_s: float = 0.0) -> list[tuple[str, str]]:
    """(label, value) rows: what was run, against what, when, with what."""
    settings = metadata.get("settings") or {}
    rows: list[tuple[str, str]] = []
    if not metadata:
        rows.append(("Run metadata", "none in this folder (no run-master.json or run-local.json): "
                                     "what follows is from the records alone"))
    hosts = settings.get("host") or ", ".join(sorted(str(u) for u in records.get("upstream", pd.Series()).unique()
                                                     if str(u))) or "-"
    scenario = settings.get("scenario")
    if scenario:
        hosts += f" (scenario {scenario.get('name') or scenario.get('file')}, {scenario.get('format')}; upstreams " \
                 f"{', '.join(scenario.get('upstreams') or []) or '-'})"
    rows.append(("Target", hosts + (f" {settings['path']}" if settings.get("path") else "")))
    models = settings.get("model") or ", ".join(sorted(str(m) for m in records.get("model", pd.Series()).unique()
                                                       if str(m))) or "-"
    rows.append(("Model", models))
    if metadata:
        rows.append(("Load", load_description(metadata)))
        request = [f"max_tokens {settings.get('max_tokens')}" + (" (ignore_eos)" if settings.get("ignore_eos") else "")]
        if not scenario:
            api = f" ({settings['api']} API)" if settings.get("api") else ""
            request.append(f"prompt {settings.get('prompt_chars', 0):,} characters{api}")
        if settings.get("temperature") is not None:
            request.append(f"temperature {settings['temperature']:g}")
        request.append("usage requested" if settings.get("include_usage") else "usage not requested")
        rows.append(("Request", ", ".join(request)))
        slos = settings.get("slos") or {}
        rows.append(("SLOs", ", ".join(f"{k.removesuffix('_ms').upper()} <= {v:g} ms" for k, v in slos.items())
                     or "none (no goodput)"))
    started = metadata.get("started") or (float(records["t_start"].min()) if len(records) else None)
    if started:
        when = datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        ended = metadata.get("ended")
        rows.append(("Started", when + (f", ran {_seconds(ended - started)}" if ended else "")))
    cancelled = int((records["error_type"] == CANCELLED).sum()) if len(records) else 0
    recorded = f"{len(records):,} requests recorded"
    if cancelled:
        recorded += f" ({cancelled:,} of them cancelled by the end of the run)"
    if warmup_s:
        recorded += f"; the first {warmup_s:g} s are left out (warm-up)"
    rows.append(("Records", recorded))
    rows.append(("Output token counts", token_sources(records)))
    workers = metadata.get("workers")
    if workers:
        lost = [w for w, f in workers.items() if f.get("lost")]
        rows.append(("Processes", f"master and {len(workers)} workers ({', '.join(workers)})"
                     + (f"; LOST during the run: {', '.join(lost)}" if lost else "")))
    elif metadata:
        rows.append(("Processes", "one standalone process"))
    versions = metadata.get("versions") or {}
    if versions:
        rows.append(("Versions", ", ".join(f"{name} {versions[name]}" for name in ("tokenstorm", "locust", "gevent",
                                                                                   "tiktoken") if versions.get(name))))
    if metadata:
        rows.append(("Client self-check", self_check(metadata)))
    return rows


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            out |= _flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: value}


def config_differences(base: dict, new: dict) -> list[tuple[str, object, object]]:
    """(setting, base value, new value) for every setting the two runs' metadata disagree on."""
    def flat(metadata: dict) -> dict[str, object]:
        out = _flatten(metadata.get("settings") or {})
        out |= {"users": metadata.get("users"), "spawn_rate": metadata.get("spawn_rate"),
                "workers": len(metadata.get("workers") or {}) or None}
        out |= {f"versions.{k}": v for k, v in (metadata.get("versions") or {}).items()}
        return out

    a, b = flat(base), flat(new)
    return [(key, a.get(key), b.get(key)) for key in sorted(a.keys() | b.keys())
            if key.split(".")[-1] not in IGNORED_DIFFERENCES and a.get(key) != b.get(key)]
