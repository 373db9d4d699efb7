"""Per-request records on disk: DIR/requests-<worker>.csv, appended as requests finish.

Rows are buffered and flushed at least every second, at the end of a test and on
SIGTERM/SIGINT (Locust stops the runner, which ends the test), so at most one second of
records is at risk if the process is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
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


class RecordWriteError(OSError):
    """Records could not be written: says where, why, and how many are kept whole and lost."""

    def __init__(self, path: Path, cause: OSError, kept: int, lost: int):
        super().__init__(f"cannot write records to {path} ({cause.strerror or cause}): {kept} kept whole there, "
                         f"{lost} not written")
        self.errno, self.path, self.kept, self.lost = cause.errno, path, kept, lost


class RecordWriter:
    """A CSV file of records (or of conversations, with their fields), buffered between flushes.

    A write that fails (a full disk) never leaves a cut line: the file is cut back to its last whole
    record. The error goes to `on_error` once (default: raised); later records are counted as lost.
    """

    def __init__(self, path: Path, fields: list[str] = RECORD_FIELDS, on_error=None):
        self.path = path
        self.fields = fields
        self._on_error = on_error
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - lives for the run
        self._size = 0  # bytes of whole rows on disk
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer)
        self._csv.writerow(fields)
        self.count = 0  # records on disk or on their way there
        self._buffered = 0
        self.failed: RecordWriteError | None = None
        self.lost = 0
        self.flush()

    def write(self, record: Record) -> None:
        self.write_row([getattr(record, f) for f in self.fields])

    def write_row(self, row: list) -> None:
        """A record as a list of values in RECORD_FIELDS order (as shipped by workers)."""
        if self.failed is not None:
            self.lost += 1
            return
        self._csv.writerow(["" if v is None else v for v in row])
        self.count += 1
        self._buffered += 1

    def flush(self) -> None:
        data = self._buffer.getvalue().encode("utf-8")
        self._buffer.seek(0)
        self._buffer.truncate()
        buffered, self._buffered = self._buffered, 0
        if not data or self.failed is not None:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[self._file.write(view):]
        except OSError as exc:
            with contextlib.suppress(OSError):  # cut back to whole rows (frees the space the cut row took)
                os.ftruncate(self._file.fileno(), self._size)
            self.count -= buffered
            self.lost += buffered
            self.failed = RecordWriteError(self.path, exc, self.count, self.lost)
            if self._on_error is None:
                raise self.failed from exc
            self._on_error(self.failed)
            return
        self._size += len(data)

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()
