"""--server-metrics URL: scrape the target's own Prometheus /metrics during a run.

The master (or a standalone process) GETs the URL every SCRAPE_INTERVAL_S in a greenlet, over
the client's gevent-cooperative Connection with a short deadline, and appends every sample to
DIR/server-metrics.csv (t, metric, labels, value): the server's view of the run as a time
series, which `python -m analysis report` plots and reconciles with the client's records
(analysis/server_metrics.py). A failed scrape is one warning line and the run goes on; a URL that
cannot be scraped at all is refused before any load.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import gevent
from prometheus_client.parser import text_string_to_metric_families

from ..client.httpclient import Connection, ConnectionLost, HTTPError, Target

FILENAME = "server-metrics.csv"
COLUMNS = ("t", "metric", "labels", "value")
SCRAPE_INTERVAL_S = 2.0
TIMEOUT_S = 2.0  # connect and read, each scrape
MAX_BODY = 16 << 20  # a vLLM /metrics page is ~100 KB; anything near this is not a metrics page
LOG_PREFIX = "tokenstorm:"
PAUSE_EVERY_S = 0.001


class ScrapeError(Exception):
    """One scrape failed; the message says why, in one line."""


def metrics_target(url: str) -> tuple[Target, str]:
    """(where to connect, the path to GET) of a /metrics URL; ValueError names what is wrong."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ValueError(f"URL {public_url(url)!r} must not hold credentials")
    target = Target.parse(url)  # http(s), a host, a valid port, no query
    return target, target.base_path or "/metrics"


def public_url(url: str) -> str:
    """The URL as it may be written down: no userinfo, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if _port(parts) else "")
    return f"{parts.scheme}://{netloc}{parts.path}"


def _port(parts) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


def format_labels(labels: dict[str, str]) -> str:
    """Prometheus' own notation, sorted: model_name="m",le="0.5"."""
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


def parse_samples(text: str, pause=None) -> list[tuple[str, str, float]]:
    """(sample name, labels, value) of an exposition page; the _created timestamps are left out.
    `pause()`, if given, is called about every PAUSE_EVERY_S of parsing (see Scraper.fetch)."""
    out = []
    since = time.perf_counter()
    for family in text_string_to_metric_families(text):  # a generator: one family at a time
        if pause is not None and time.perf_counter() - since > PAUSE_EVERY_S:
            pause()
            since = time.perf_counter()
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out.append((sample.name, format_labels(sample.labels), float(sample.value)))
    return out


class Scraper:
    """GET a /metrics URL; `scrape()` once, `start()` every SCRAPE_INTERVAL_S until `stop()`."""

    def __init__(self, url: str, folder: Path | None, ssl_context=None, interval_s: float = SCRAPE_INTERVAL_S):
        self.url = public_url(url)
        self.target, self.path = metrics_target(url)
        self.folder = folder
        self.interval_s = interval_s
        self._conn = Connection(self.target, TIMEOUT_S, ssl_context if self.target.scheme == "https" else None)
        self._file = None
        self._writer = None
        self._greenlet: gevent.Greenlet | None = None
        self._failing = False
        self.scrapes = 0  # successful ones written
        self.failures = 0
        self.broken = False  # the file cannot be written: no more scrapes

    def fetch(self) -> list[tuple[str, str, float]]:
        """One scrape: its samples. Raises ScrapeError."""
        conn = self._conn
        conn.deadline = time.monotonic() + TIMEOUT_S
        try:
            response, _ = conn.request("GET", self.path, [("Accept", "text/plain; version=0.0.4")])
            body = response.read_all(MAX_BODY)
        except (HTTPError, ConnectionLost) as exc:
            conn.close()
            raise ScrapeError(f"GET {self.url}: {exc}") from None
        finally:
            conn.disarm()
        if response.status != 200:
            raise ScrapeError(f"GET {self.url} answered HTTP {response.status}")
        try:
            # Parsing a vLLM page (~1,000 samples) takes 10-20 ms of CPU: in one go on a standalone
            # process's event loop it would delay the streams' reads, so the loop gets a turn every
            # ms (a short timer: gevent.sleep(0) runs other greenlets but no timers or I/O).
            samples = parse_samples(body.decode("utf-8"), pause=lambda: gevent.sleep(0.0001))
        except (UnicodeDecodeError, ValueError, TypeError, IndexError) as exc:
            raise ScrapeError(f"GET {self.url}: not Prometheus text ({str(exc)[:80] or type(exc).__name__})") from None
        if not samples:
            raise ScrapeError(f"GET {self.url}: no metrics in the answer")
        return samples

    def scrape(self) -> bool:
        """Fetch and append one scrape to the file; a failure is one warning line (once per streak)."""
        t = time.time()
        try:
            samples = self.fetch()
        except ScrapeError as exc:
            self.failures += 1
            if not self._failing:
                print(f"{LOG_PREFIX} WARNING: server metrics: {exc}; the run goes on", file=sys.stderr, flush=True)
            self._failing = True
            return False
        self._failing = False
        try:
            self._append(t, samples)
        except OSError as exc:
            print(f"{LOG_PREFIX} WARNING: server metrics: cannot write {self.folder / FILENAME} "
                  f"({exc.strerror or exc}); scraping stops, the run goes on", file=sys.stderr, flush=True)
            self.broken = True
            return False
        self.scrapes += 1
        return True

    def _append(self, t: float, samples: list[tuple[str, str, float]]) -> None:
        if self._file is None:
            if self.folder is None:
                raise OSError("no results folder")
            path = self.folder / FILENAME
            new = not path.exists() or path.stat().st_size == 0
            self._file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 (open for the whole run)
            self._writer = csv.writer(self._file)
            if new:
                self._writer.writerow(COLUMNS)
        stamp = f"{t:.3f}"
        self._writer.writerows((stamp, name, labels, repr(value)) for name, labels, value in samples)
        self._file.flush()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self.broken:
            next_at += self.interval_s
            gevent.sleep(max(0.0, next_at - time.monotonic()))
            self.scrape()

    def start(self) -> None:
        """Scrape now (called before the users start: the window's start holds none of their requests),
        then every interval in a greenlet."""
        if self._greenlet is None:
            self.scrape()
            self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        """End the loop, then one last scrape: the window ends after the last request."""
        if self._greenlet is not None:
            self._greenlet.kill(block=True)
            self._greenlet = None
            if not self.broken:
                self.scrape()

    def close(self) -> None:
        self.stop()
        self._conn.close()
        if self._file is not None:
            self._file.close()
            self._file = None


def check(url: str, ssl_context=None) -> None:
    """One scrape before any load: ValueError (one line) when the URL gives no metrics."""
    scraper = Scraper(url, None, ssl_context)
    try:
        scraper.fetch()
    except ScrapeError as exc:
        raise ValueError(str(exc)) from None
    finally:
        scraper.close()
