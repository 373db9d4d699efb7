"""A results folder: records of all workers, run metadata, Locust's CSVs (all optional but records)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .stats import CATEGORIES, NUMERIC, REQUIRED, RecordsError, load_records


@dataclass
class Results:
    folder: Path
    records: pd.DataFrame
    metadata: dict = field(default_factory=dict)  # run-master.json or run-local.json
    locust_stats: pd.DataFrame | None = None
    locust_history: pd.DataFrame | None = None
    locust_failures: pd.DataFrame | None = None
    warmup_s: float = 0.0

    @property
    def slos(self) -> dict[str, float]:
        return dict((self.metadata.get("settings") or {}).get("slos") or {})

    @property
    def config(self) -> dict:
        return dict(self.metadata.get("settings") or {})


def _read_locust_csv(folder: Path, suffix: str) -> pd.DataFrame | None:
    files = sorted(folder.glob(f"*{suffix}"))
    if not files:
        return None
    try:
        return pd.read_csv(files[0])
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RecordsError(f"{files[0]}: cannot read it ({str(exc).splitlines()[0]})") from None


def load_results(folder: str | Path, warmup_s: float = 0.0) -> Results:
    """Load a results folder; `warmup_s` drops requests sent in the first seconds of the run."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RecordsError(f"{folder}: not a folder")
    if not list(folder.glob("requests-*.csv")) and list(folder.glob("*_stats.csv")):
        columns = list(dict.fromkeys((*REQUIRED, *NUMERIC, *CATEGORIES)))
        records = pd.DataFrame({c: pd.Series(dtype=float if c in NUMERIC else object) for c in columns})
    else:
        records = load_records(folder)
    if warmup_s > 0 and len(records):
        records = records[records["t_start"] >= records["t_start"].min() + warmup_s].reset_index(drop=True)
    metadata: dict = {}
    for name in ("run-master.json", "run-local.json"):
        path = folder / name
        if path.exists():
            try:
                metadata = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise RecordsError(f"{path}: not valid JSON ({exc})") from None
            break
    return Results(folder, records, metadata, _read_locust_csv(folder, "_stats.csv"),
                   _read_locust_csv(folder, "_stats_history.csv"), _read_locust_csv(folder, "_failures.csv"),
                   warmup_s)


def run_folders(paths: list[str | Path]) -> list[Path]:
    """Results folders: the given ones, or the results folders inside a single given folder."""
    folders = [Path(p) for p in paths]
    if len(folders) == 1 and folders[0].is_dir() and not list(folders[0].glob("requests-*.csv")):
        folders = sorted(p for p in folders[0].iterdir() if p.is_dir() and list(p.glob("requests-*.csv")))
        if not folders:
            raise RecordsError(f"{paths[0]}: no results folders (with requests-*.csv) in it")
    return folders
