"""`make demo`: the bundled mock, a short headless Locust run against it, the exact report.

Starts the mock (jittered like a loaded server), runs locustfiles/chat_stream.py with 10
concurrent streams for 60 requests, writes a results folder with the analysis report (md,
html, plots) and prints the report; stops everything it started.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tokenstorm.core.assets import locustfile
from tokenstorm.mockproc import MockProcess

MOCK_ARGS = ["--ttft-ms", "150", "--itl-ms", "15", "--jitter", "0.2", "--output-tokens", "80", "--seed", "7"]
USERS, REQUESTS = 10, 60


def main() -> int:
    results = Path("results") / time.strftime("demo-%Y%m%d-%H%M%S")  # in the current folder
    print(f"Starting the bundled mock ({' '.join(MOCK_ARGS)})...", flush=True)
    with MockProcess(MOCK_ARGS) as mock:
        cmd = [sys.executable, "-m", "locust", "-f", str(locustfile("chat_stream")), "--headless", "--only-summary",
               "--host", mock.url, "-u", str(USERS), "-r", str(USERS), "--total-requests", str(REQUESTS),
               "--max-tokens", "128", "--slo-ttft-ms", "250", "--slo-tpot-ms", "20", "--results-dir", str(results)]
        print("Running: locust", " ".join(cmd[3:]), flush=True)
        env = {**os.environ, "OPENAI_API_KEY": "mock-key"}  # the mock's default key
        code = subprocess.call(cmd, env=env)
    if code != 0:
        print(f"demo: locust exited with status {code}", file=sys.stderr)
        return code
    from analysis.report import write_report
    from analysis.results import load_results

    write_report(load_results(results))
    print(f"\nResults folder: {results} (records, run metadata, report.md, report.html, plots/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
