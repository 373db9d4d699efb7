"""The LLM tab of Locust's web UI, through Locust's own extension points (no fork of its front end).

- `extended_tabs`/`extended_tables` in the template args add the tab; `extended_stats` added to
  every /stats/requests answer fills it (exact percentiles from tokenstorm's live records, see
  live.py; on a master, the whole run).
- /llm is a small page of our own with the charts (TTFT P50/P99 and output tokens/s over time),
  drawn on a canvas by inline script: nothing is fetched from a CDN.
- The download tab gets the per-request records (merged over all workers) and the analysis
  report of the current or last run.
Every added route is wrapped in Locust's auth_required_if_enabled, so --web-login protects it.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from flask import Response, request

from ..core.records import RECORD_FIELDS
from .options import SECRET_MASK, SECRET_OPTIONS
from .report import build_report_elsewhere

COLUMNS = [("name", "Upstream / scenario"), ("requests", "Requests"), ("failures", "Failures"),
           ("failclasses", "Failures by class"), ("tokps", "Output tokens/s (run)"), ("inflight", "Streams in flight"),
           ("ttftp50", "TTFT P50 (ms)"), ("ttftp90", "TTFT P90"), ("ttftp99", "TTFT P99"),
           ("tpotp50", "TPOT P50 (ms)"), ("tpotp90", "TPOT P90"), ("tpotp99", "TPOT P99"),
           ("e2ep50", "E2E P50 (ms)"), ("e2ep90", "E2E P90"), ("e2ep99", "E2E P99"),
           ("goodput", "Goodput (req/s, run)")]


def _mask_secrets(web_ui) -> None:
    """Locust writes every option's value into the page (a secret one only gets a password
    field): replace secret values with SECRET_MASK each time it rebuilds the page's arguments."""
    rebuild = web_ui.update_template_args

    def update_template_args() -> None:
        rebuild()
        for name in SECRET_OPTIONS:
            option = (web_ui.template_args.get("extra_options") or {}).get(name)
            if option is not None and option.get("default_value"):
                option["default_value"] = SECRET_MASK

    web_ui.update_template_args = update_template_args
    update_template_args()


def install(environment, current_session) -> None:
    """Add the tab, the chart page and the downloads to `environment.web_ui` (master or standalone)."""
    web_ui = environment.web_ui
    if web_ui is None:
        return
    base = (getattr(environment.parsed_options, "web_base_path", "") or "").rstrip("/")
    web_ui.template_args["extended_tabs"] = [{"title": "LLM", "key": "llm"}]
    web_ui.template_args["extended_tables"] = [{"key": "llm", "structure": [{"key": k, "title": t}
                                                                            for k, t in COLUMNS]}]
    _mask_secrets(web_ui)
    web_ui.template_args["extended_csv_files"] = [
        {"href": f"{base}/llm/records.csv", "title": "Download per-request records (all workers, CSV)"},
        {"href": f"{base}/llm/report.html", "title": "Download the analysis report of this run (HTML)"},
        {"href": f"{base}/llm", "title": "LLM charts: TTFT and output tokens/s over time"},
    ]
    app = web_ui.app
    protect = web_ui.auth_required_if_enabled

    def flushed_results_dir() -> Path | None:
        """The current run's results folder with every record written so far on disk, or None before a run."""
        session = current_session()
        if session is None:
            return None
        session.flush_records()
        return Path(session.settings.results_dir)

    @app.after_request
    def _extend_stats(response: Response) -> Response:
        if not request.path.endswith("/stats/requests") or response.status_code != 200:
            return response
        session = current_session()
        rows = session.live.rows() if session is not None else []
        data = response.get_json(silent=True) or {}
        response.set_data(json.dumps({**data, "extended_stats": [{"key": "llm", "data": rows}]}))
        return response

    @app.route(f"{base}/llm")
    @protect
    def llm_page():
        return Response(CHART_PAGE.replace("__BASE__", base), mimetype="text/html")

    @app.route(f"{base}/llm/data")
    @protect
    def llm_data():
        session = current_session()
        if session is None:
            return {"rows": [], "history": []}
        session.live.sample()
        return {"rows": session.live.rows(), "history": session.live.history}

    @app.route(f"{base}/llm/records.csv")
    @protect
    def llm_records():
        results_dir = flushed_results_dir()
        if results_dir is None:
            return Response("no run yet\n", status=404, mimetype="text/plain")
        buffer = io.StringIO()
        buffer.write(",".join(RECORD_FIELDS) + "\r\n")
        for path in sorted(results_dir.glob("requests-*.csv")):
            with open(path, encoding="utf-8") as f:
                next(f, None)  # each file's header
                buffer.write(f.read())
        name = f"requests-{time.strftime('%Y%m%d-%H%M%S')}.csv"
        return Response(buffer.getvalue(), mimetype="text/csv",
                        headers={"Content-Disposition": f"attachment; filename={name}"})

    @app.route(f"{base}/llm/report.html")
    @protect
    def llm_report():
        results_dir = flushed_results_dir()
        if results_dir is None:
            return Response("no run yet\n", status=404, mimetype="text/plain")
        problem = build_report_elsewhere(results_dir)
        if problem:
            return Response(f"no report: {problem}\n", status=404, mimetype="text/plain")
        return Response((results_dir / "report.html").read_text(), mimetype="text/html")


CHART_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>tokenstorm: LLM charts</title>
<style>body{font-family:sans-serif;margin:1.5em}canvas{border:1px solid #ddd;margin:.5em 0}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head>
<body><h2>tokenstorm: LLM charts</h2><p><a href="__BASE__/">back to Locust</a> &middot; charts: exact percentiles
and tokens/s over the last 10 s, refreshed every 2 s; table: the whole run so far</p>
<h3>TTFT (ms): P50 blue, P99 red</h3><canvas id="ttft" width="900" height="220"></canvas>
<h3>Output tokens/s (last 10 s)</h3><canvas id="tok" width="900" height="220"></canvas>
<h3>The run so far</h3><table id="rows"></table>
<script>
function draw(id, series, colors) {
  const c = document.getElementById(id), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const all = series.flat().filter(v => v !== null);
  if (!all.length) { g.fillText("no data yet", 10, 20); return; }
  const max = Math.max(...all) * 1.1 || 1, n = Math.max(...series.map(s => s.length));
  g.fillStyle = "#555"; g.fillText(max.toFixed(1), 2, 10); g.fillText("0", 2, c.height - 2);
  series.forEach((s, k) => {
    g.strokeStyle = colors[k]; g.beginPath(); let started = false;
    s.forEach((v, i) => { if (v === null) return;
      const x = 40 + (c.width - 50) * (n > 1 ? i / (n - 1) : 0), y = c.height - 5 - (c.height - 15) * v / max;
      if (started) g.lineTo(x, y); else { g.moveTo(x, y); started = true; } });
    g.stroke(); });
}
async function refresh() {
  const r = await fetch("__BASE__/llm/data", {credentials: "same-origin"});
  if (!r.ok) return;
  const d = await r.json(), h = d.history;
  draw("ttft", [h.map(p => p.ttft_p50), h.map(p => p.ttft_p99)], ["#1f77b4", "#d62728"]);
  draw("tok", [h.map(p => p.tok_s)], ["#2ca02c"]);
  const keys = ["name","requests","failures","tokps","inflight","ttftp50","ttftp99","tpotp50","tpotp99","e2ep50"];
  document.getElementById("rows").innerHTML = "<tr>" + keys.map(k => "<th>" + k + "</th>").join("") + "</tr>" +
    d.rows.map(row => "<tr>" + keys.map(k => "<td>" + (row[k] ?? "-") + "</td>").join("") + "</tr>").join("");
}
refresh(); setInterval(refresh, 2000);
</script></body></html>"""
