"""Per-request records on disk: DIR/requests-<worker>.csv, appended as requests finish.

Rows are buffered and flushed at least every second, at the end of a test and on
SIGTERM/SIGINT (Locust stops the runner, which ends the test), so at most one second of
records is at risk if the process is killed with SIGKILL.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..core.records import RECORD_FIELDS, Record


def check_writable(directory: Path) -> None:
    """Create `directory` and prove a file can be written in it; OSError says why not."""
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".write-test-{os.getpid()}"
    probe.write_text("ok")
    probe.unlink()


class RecordWriter:
    """A CSV file of records (or of conversations, with their fields), buffered between flushes."""

    def __init__(self, path: Path, fields: list[str] = RECORD_FIELDS):
        self.path = path
        self.fields = fields
        self._file = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - lives for the run
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer)
        self._csv.writerow(fields)
        self.count = 0
        self.flush()

    def write(self, record: Record) -> None:
        self.write_row([getattr(record, f) for f in self.fields])

    def write_row(self, row: list) -> None:
        """A record as a list of values in RECORD_FIELDS order (as shipped by workers)."""
        self._csv.writerow(["" if v is None else v for v in row])
        self.count += 1

    def flush(self) -> None:
        data = self._buffer.getvalue()
        if data:
            self._file.write(data)
            self._file.flush()
            self._buffer.seek(0)
            self._buffer.truncate()

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()
