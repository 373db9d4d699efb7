"""The LLM tab of Locust's web UI, through Locust's own extension points (no fork of its front end).

- `extended_tabs`/`extended_tables` in the template args add the tab; `extended_stats` added to
  every /stats/requests answer fills it (exact percentiles from tokenstorm's live records, see
  live.py; on a master, the whole run).
- /llm is a small page of our own with the charts (TTFT P50/P99 and output tokens/s over time),
  drawn as SVG by inline script: nothing is fetched from a CDN. Locust's page gets a small
  links bar to it, the report and the records.
- The page opens on the LLM tab, and Locust's header (RPS, failures) and Charts tab show the
  requests only (Locust's own totals add the TTFT/TPOT rows to them).
- The download tab gets the per-request records (merged over all workers) and the analysis
  report of the current or last run.
Every added route is wrapped in Locust's auth_required_if_enabled, so --web-login protects it.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from flask import Response, redirect, request
from locust import stats as locust_stats

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

    links = LINKS_BAR.replace("__BASE__", base).encode()

    @app.after_request
    def _extend_stats(response: Response) -> Response:
        index = request.path in (f"{base}/", base or "/")
        if index and response.status_code == 200 and response.mimetype == "text/html":
            response.set_data(response.get_data().replace(b"</body>", links + b"</body>", 1))
            return response
        if not request.path.endswith("/stats/requests") or response.status_code != 200:
            return response
        session = current_session()
        rows = session.live.rows() if session is not None else []
        data = response.get_json(silent=True) or {}
        if session is not None and data.get("stats"):
            data.update(session.live.header(locust_stats.PERCENTILES_TO_CHART))
        response.set_data(json.dumps({**data, "extended_stats": [{"key": "llm", "data": rows}]}))
        return response

    @app.before_request
    def _open_on_the_llm_tab():
        """Locust's page opens on its Statistics tab, whose first rows and chart mix TTFT, TPOT and
        E2E; the React app opens the tab named in ?tab=, so the bare page gets the LLM tab."""
        if request.method == "GET" and request.path in (f"{base}/", base or "/") and "tab" not in request.args:
            query = request.query_string.decode("latin-1")
            return redirect(f"{base}/?tab=llm" + (f"&{query}" if query else ""), code=302)
        return None

    @app.route(f"{base}/llm")
    @protect
    def llm_page():
        page = CHART_PAGE.replace("__COLUMNS__", json.dumps(COLUMNS)).replace("__BASE__", base)
        return Response(page, mimetype="text/html")

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
<style>body{font-family:sans-serif;margin:1.5em}svg{border:1px solid #ddd;margin:.5em 0;background:#fff}
svg text{font:11px sans-serif;fill:#444}.axis{stroke:#888}.grid{stroke:#eee}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head>
<body><h2>tokenstorm: LLM charts</h2><p><a href="__BASE__/?tab=llm">back to Locust</a> &middot; charts: exact
percentiles and tokens/s over the last 10 s, refreshed every 2 s; table: the whole run so far</p>
<h3>Time to first token</h3><svg id="ttft" width="900" height="260"></svg>
<h3>Output tokens per second</h3><svg id="tok" width="900" height="260"></svg>
<h3>The run so far</h3><table id="rows"></table>
<script>
const COLUMNS = __COLUMNS__;
const NS = "http://www.w3.org/2000/svg";
function el(svg, name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  svg.appendChild(e); return e;
}
function ticks(max, n) { // from 0 to at least max in round steps: 1, 2 or 5 times a power of ten
  const raw = max / n, p = Math.pow(10, Math.floor(Math.log10(raw))), m = raw / p;
  const step = (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p, out = [0];
  while (out[out.length - 1] < max) out.push(out.length * step);
  return out;
}
function draw(id, times, series, yLabel) {
  const svg = document.getElementById(id), W = +svg.getAttribute("width"), H = +svg.getAttribute("height");
  const L = 70, R = 50, T = 25, B = 45, w = W - L - R, h = H - T - B;
  svg.innerHTML = "";
  el(svg, "text", {x: 14, y: T + h / 2, transform: `rotate(-90 14 ${T + h / 2})`, "text-anchor": "middle",
                   "class": "ylabel"}, yLabel);
  el(svg, "text", {x: L + w / 2, y: H - 6, "text-anchor": "middle", "class": "xlabel"}, "time (local clock)");
  const all = series.flatMap(s => s.values).filter(v => v !== null);
  if (!all.length) { el(svg, "text", {x: L + 10, y: T + 20}, "no data yet"); return; }
  const ys = ticks(Math.max(...all) || 1, 5), yMax = ys[ys.length - 1] || 1;
  const t0 = times[0], t1 = Math.max(times[times.length - 1], t0 + 1);
  const X = t => L + w * (t - t0) / (t1 - t0), Y = v => T + h - h * v / yMax;
  ys.forEach(v => { el(svg, "line", {x1: L, x2: L + w, y1: Y(v), y2: Y(v), "class": "grid"});
                    el(svg, "text", {x: L - 6, y: Y(v) + 4, "text-anchor": "end"}, +v.toPrecision(4)); });
  const nx = Math.min(6, times.length);
  for (let i = 0; i < nx; i++) {
    const t = t0 + (t1 - t0) * (nx > 1 ? i / (nx - 1) : 0);
    el(svg, "line", {x1: X(t), x2: X(t), y1: T + h, y2: T + h + 4, "class": "axis"});
    el(svg, "text", {x: X(t), y: T + h + 17, "text-anchor": "middle"}, new Date(t * 1000).toLocaleTimeString());
  }
  el(svg, "line", {x1: L, x2: L, y1: T, y2: T + h, "class": "axis"});
  el(svg, "line", {x1: L, x2: L + w, y1: T + h, y2: T + h, "class": "axis"});
  series.forEach((s, k) => {
    let d = "";
    s.values.forEach((v, i) => {
      if (v !== null) d += (d ? "L" : "M") + X(times[i]).toFixed(1) + "," + Y(v).toFixed(1); });
    if (d) el(svg, "path", {d: d, fill: "none", stroke: s.color, "stroke-width": 2});
    el(svg, "rect", {x: L + 10 + 110 * k, y: 6, width: 12, height: 3, fill: s.color});
    el(svg, "text", {x: L + 26 + 110 * k, y: 11, "class": "legend"}, s.name);
  });
}
const esc = v => String(v ?? "-").replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
async function refresh() {
  const r = await fetch("__BASE__/llm/data", {credentials: "same-origin"});
  if (!r.ok) return;
  const d = await r.json(), h = d.history, t = h.map(p => p.t);
  draw("ttft", t, [{name: "TTFT P50", color: "#1f77b4", values: h.map(p => p.ttft_p50)},
                   {name: "TTFT P99", color: "#d62728", values: h.map(p => p.ttft_p99)}], "TTFT (ms)");
  draw("tok", t, [{name: "output tokens/s", color: "#2ca02c", values: h.map(p => p.tok_s)}], "output tokens/s");
  document.getElementById("rows").innerHTML = "<tr>" + COLUMNS.map(c => "<th>" + esc(c[1]) + "</th>").join("") +
    "</tr>" + d.rows.map(row => "<tr>" + COLUMNS.map(c => "<td>" + esc(row[c[0]]) + "</td>").join("") +
    "</tr>").join("");
}
refresh(); setInterval(refresh, 2000);
</script></body></html>"""

LINKS_BAR = """<div id="tokenstorm-links" style="position:fixed;right:12px;bottom:10px;z-index:2000;
font:13px sans-serif;background:rgba(255,255,255,.92);border:1px solid #bbb;border-radius:6px;padding:4px 10px">
tokenstorm:
<a href="__BASE__/llm">LLM charts</a> &middot; <a href="__BASE__/llm/report.html">report</a> &middot;
<a href="__BASE__/llm/records.csv">records CSV</a></div>"""
