"""The results directory: what a sweep writes, and nothing else.

Layout: a marker (``.conformance-results``) that makes the directory the harness's own;
``cells/`` with one JSON file per cell, written atomically as each cell finishes;
``fingerprint.json`` (what ran, where, and the list of the run's cell files);
``results.parquet`` and ``results.csv`` (the table, written at the end); ``logs/`` (each
worker's output). A run holds an exclusive lock on the directory; ``report`` and
``gate`` hold a shared one, so that nobody reads a table while a run writes it.

The cell files are the record: a table is always rebuilt from them when they are
there. A cell file is used only after it is checked (a JSON object with every column,
of the right types, holding the cell its name is for); a damaged one is recomputed by
``run --resume`` and named in the error of ``report`` and ``gate``.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..execution._cell import COLUMNS, STATUSES
from ..functions._functions import DEFAULT_FUNCTION, uid

__all__ = [
    "ResultsDir",
    "ResultsError",
    "cell_file_name",
    "check_record",
    "load_results",
    "table_from",
]


def _suite_families() -> frozenset[str]:
    from ..functions._families import FAMILIES

    return frozenset(f.name for f in FAMILIES if f.suite)


# the peers' test suites: their cells pass by the suite's verdict, with no ULP measured
_SUITES = _suite_families()

MARKER = ".conformance-results"
_LOCK = ".lock"
_CELL = re.compile(r"^[A-Za-z0-9._-]{1,80}-[0-9a-f]{10}\.json$")
_LOG = re.compile(r"^(worker|probe)-[A-Za-z0-9._-]+\.log$")
_TOP = ("results.parquet", "results.csv", "fingerprint.json")
_STR = ("function", "candidate", "backend", "library", "device", "mode", "fpenv", "dtype", "family",
        "profile", "status", "reason", "semantics", "curve", "hist", "platform", "notes", "judge",
        "host", "counts")  # fmt: skip
# columns added since the first release, with the value an older record stands for
_ADDED = {"host": "", "counts": "{}", "function": DEFAULT_FUNCTION, "fpenv": "default"}
_INT = ("n_inputs", "n_elements", "special_mismatches")
_NUM = ("max_ulp", "p99_ulp", "median_ulp", "mean_ulp", "frac_correctly_rounded",
        "max_abs_err_eps", "worst_expected", "worst_got", "worst_ulp", "seconds")  # fmt: skip


class ResultsError(Exception):
    """A results directory or file that cannot be used; the message names it."""


def cell_file_name(key: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80]
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return f"{readable}-{digest}.json"


def record_key(rec: dict[str, Any]) -> str:
    """The cell's key (CellSpec.key) from its record."""
    cand = uid(str(rec["function"]), str(rec["candidate"]))
    env = str(rec.get("fpenv") or "default")
    parts = [cand, *(str(rec[k]) for k in ("backend", "dtype", "family", "profile"))]
    return "|".join(parts + ([env] if env != "default" else []))


def check_record(rec: Any, name: str) -> str | None:
    """None for a sound cell record stored under ``name``, else what is wrong."""
    if not isinstance(rec, dict):
        return f"holds a JSON {type(rec).__name__}, not a cell record"
    for k, v in _ADDED.items():
        rec.setdefault(k, v)
    missing = [c for c in COLUMNS if c not in rec]
    if missing:
        return f"lacks {len(missing)} of the record's keys ({', '.join(missing[:4])})"
    unknown = sorted(set(rec) - set(COLUMNS))
    if unknown:
        return f"has keys no cell record has ({', '.join(unknown[:4])})"
    for k in _STR:
        if not isinstance(rec[k], str):
            return f"{k} is {rec[k]!r}, not a string"
    for k in _INT:
        if isinstance(rec[k], bool) or not isinstance(rec[k], int):
            return f"{k} is {rec[k]!r}, not an integer"
    for k in _NUM:
        v = rec[k]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            return f"{k} is {v!r}, not a number"
    if rec["status"] not in STATUSES:
        return f"status {rec['status']!r} is none of {', '.join(STATUSES)}"
    no_ulp = rec["max_ulp"] is None or math.isnan(rec["max_ulp"])
    if rec["status"] == "pass" and no_ulp and rec["family"] not in _SUITES:
        return "a pass without a measured max_ulp"
    key = record_key(rec)
    if cell_file_name(key) != name:
        return f"holds the cell {key!r}, not the one its file name is for"
    return None


def table_from(records: Iterable[dict[str, Any]]) -> Any:
    import pandas as pd

    table = pd.DataFrame(list(records), columns=COLUMNS)
    order = ["function", "candidate", "backend", "dtype", "family"]
    return table.sort_values(order, kind="stable").reset_index(drop=True)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class ResultsDir:
    """One results directory (see the module's docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.cells = self.path / "cells"
        self.logs = self.path / "logs"

    # -- ownership and the lock -------------------------------------------------------
    def _owned(self) -> bool:
        if (self.path / MARKER).is_file():
            return True
        # written by an earlier version of the harness: cells/ and a run fingerprint
        try:
            fp = json.loads((self.path / "fingerprint.json").read_text())
        except (OSError, ValueError):
            return False
        return self.cells.is_dir() and isinstance(fp, dict) and "run" in fp

    @contextlib.contextmanager
    def lock(self, exclusive: bool) -> Iterator[None]:
        """Exclusive for a run, shared for readers; never waits: a clear error instead."""
        try:
            import fcntl
        except ImportError:  # no advisory locks here (Windows): unguarded
            yield
            return
        p = self.path / _LOCK
        try:
            if exclusive:
                self.path.mkdir(parents=True, exist_ok=True)
                fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
            else:  # a reader creates nothing: no lock file, no run has ever held it
                fd = os.open(p, os.O_RDWR)
        except OSError as exc:
            if not exclusive and isinstance(exc, FileNotFoundError):
                yield
                return
            if exclusive:
                raise ResultsError(
                    f"results directory {str(self.path)!r} is not writable: {exc}"
                ) from None
            yield  # a read-only directory: nobody can be writing it
            return
        try:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "?"
                raise ResultsError(
                    f"results directory {str(self.path)!r} is in use by another run "
                    f"({holder}): wait for it to finish, or choose another directory with "
                    "--results"
                ) from None
            if exclusive:
                now = datetime.datetime.now().isoformat(timespec="seconds")
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()}, started {now}".encode(), 0)
            yield
        finally:
            os.close(fd)

    def check_usable(self) -> None:
        """ResultsError unless the path is absent, an empty directory or a results
        directory: nothing is written into anyone else's directory, not even a lock."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise ResultsError(f"results path {str(p)!r} is a file, not a directory")
        if p.is_dir() and not self._owned() and any(x.name != _LOCK for x in p.iterdir()):
            raise ResultsError(
                f"results directory {str(p)!r} is not empty and was not written by "
                f"'conformance run' (it has no {MARKER} marker): choose an empty or new "
                "directory"
            )

    def prepare(self, fresh: bool) -> list[str]:
        """Make the directory a results directory for a run; with ``fresh``, remove what
        an earlier run wrote (and only that). Returns notes for the log."""
        p = self.path
        notes = []
        self.check_usable()
        try:
            p.mkdir(parents=True, exist_ok=True)
            self.cells.mkdir(exist_ok=True)
            self.logs.mkdir(exist_ok=True)
            marker = {"tool": "log-softmax-conformance", "format": 1}
            _write_atomic(p / MARKER, json.dumps(marker).encode())
        except PermissionError as exc:
            raise ResultsError(f"results directory {str(p)!r} is not writable: {exc}") from None
        except OSError as exc:
            raise ResultsError(f"results directory {str(p)!r} cannot be used: {exc}") from None
        if fresh:
            notes += self._replacing()
            removed = left = 0
            for d, pattern in ((self.cells, _CELL), (self.logs, _LOG)):
                for f in d.iterdir():
                    if f.is_file() and (pattern.match(f.name) or f.name.endswith(".tmp")):
                        f.unlink()
                        removed += 1
                    else:
                        left += 1
            for name in _TOP:
                (p / name).unlink(missing_ok=True)
            if left:
                notes.append(f"{left} files in {p} that this harness did not write were left")
        return notes

    def _replacing(self) -> list[str]:
        """Before a fresh run: what it replaces, in words, and the report of the results
        it replaces removed (the files that report listed as its own, nothing else)."""
        notes = []
        fp = self.read_fingerprint() or {}
        cells = len(list(self.cells.glob("*.json")))
        if cells or fp:
            when = fp.get("run", {}).get("finished") or "an unfinished run"
            notes.append(f"replacing the results of {when}: {cells} cell" + "s" * (cells != 1))
        report = self.path / "report"
        try:
            listed = json.loads((report / ".report-files").read_text())
        except (OSError, ValueError):
            return notes
        gone = 0
        for name in listed if isinstance(listed, list) else []:
            f = report / str(name)
            if ".." not in Path(str(name)).parts and f.is_file():
                f.unlink()
                gone += 1
        (report / ".report-files").unlink(missing_ok=True)
        for d in sorted((x for x in report.rglob("*") if x.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()  # emptied folders of the report (img/, candidates/)
        with contextlib.suppress(OSError):
            report.rmdir()
        notes.append(f"removed the {gone} files of the report of those results")
        return notes

    # -- cells ------------------------------------------------------------------------
    def write_cell(self, rec: dict[str, Any]) -> None:
        """The cell's file, atomically; a ResultsError naming the disk's problem (a full
        disk, an unwritable directory) where it cannot be written: the sweep stops
        there, and --resume goes on from the cells already written."""
        name = cell_file_name(record_key(rec))
        try:
            _write_atomic(self.cells / name, json.dumps(rec, sort_keys=True).encode())
        except OSError as exc:
            what = errno.errorcode.get(exc.errno or 0, "")
            raise ResultsError(
                f"cannot write a cell's result to {str(self.cells)!r}: "
                f"{exc.strerror or exc}{f' ({what})' if what else ''}; the cells written so "
                "far are kept: free space or fix the directory's permissions, then run "
                "again with --resume"
            ) from None

    def read_cells(
        self, names: Iterable[str] | None = None
    ) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
        """(sound records by file name, [(file, what is wrong)]) of ``names`` (default:
        every cell file); files that do not exist are neither."""
        if names is None:
            names = sorted(f.name for f in self.cells.glob("*.json") if _CELL.match(f.name))
        good: dict[str, dict[str, Any]] = {}
        bad: list[tuple[str, str]] = []
        for name in names:
            f = self.cells / name
            try:
                text = f.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                bad.append((str(f), f"cannot be read: {exc}"))
                continue
            try:
                rec = json.loads(text)
            except (ValueError, UnicodeDecodeError) as exc:
                what = "is empty" if not text.strip() else f"is not JSON ({exc})"
                bad.append((str(f), what))
                continue
            why = check_record(rec, name)
            if why is None:
                good[name] = rec
            else:
                bad.append((str(f), why))
        return good, bad

    # -- the fingerprint and the table ------------------------------------------------
    def write_fingerprint(self, fp: dict[str, Any]) -> None:
        _write_atomic(self.path / "fingerprint.json", json.dumps(fp, indent=2).encode())

    def read_fingerprint(self) -> dict[str, Any] | None:
        f = self.path / "fingerprint.json"
        if not f.exists():
            return None
        try:
            fp = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            raise ResultsError(f"{str(f)!r} is damaged: {exc}") from None
        if not isinstance(fp, dict):
            raise ResultsError(f"{str(f)!r} is damaged: not a JSON object")
        return fp

    def write_table(self, table: Any) -> None:
        for name in ("results.parquet", "results.csv"):
            tmp = self.path / f".{name}.{os.getpid()}.tmp"
            if name.endswith(".parquet"):
                table.to_parquet(tmp, index=False)
            else:
                table.to_csv(tmp, index=False)
            os.replace(tmp, self.path / name)


def _damaged(bad: list[tuple[str, str]]) -> str:
    lines = [f"  {f}: {why}" for f, why in bad[:10]]
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    return (
        f"{len(bad)} damaged cell files (rerun with 'run --resume' to recompute them):\n"
        + "\n".join(lines) + more
    )  # fmt: skip


def load_results(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """(table, fingerprint) of a finished run, for the report and the gate. The table
    is rebuilt from the cell files of the run; from results.parquet where there are
    none. Raises ResultsError naming any file that cannot be used."""
    rd = ResultsDir(path)
    p = rd.path
    if p.exists() and not p.is_dir():
        raise ResultsError(f"results path {str(p)!r} is a file, not a results directory")
    if not p.is_dir():
        raise ResultsError(f"no results in {str(p)!r}: run a sweep first")
    with rd.lock(exclusive=False):
        fp = rd.read_fingerprint() or {}
        run = fp.get("run", {}) if isinstance(fp.get("run"), dict) else {}
        if rd.cells.is_dir():
            names = run.get("cells")
            if not isinstance(names, list):
                names = None
            good, bad = rd.read_cells(names)
            if bad:
                raise ResultsError(f"results in {str(p)!r}: " + _damaged(bad))
            if names is not None and len(good) < len(names):
                raise ResultsError(
                    f"results in {str(p)!r}: {len(names) - len(good)} of the run's "
                    f"{len(names)} cells have no result: the run did not finish; complete it "
                    "with 'run --resume'"
                )
            if not good:
                raise ResultsError(f"no results in {str(p)!r}: run a sweep first")
            return table_from(good.values()), fp
        return _read_parquet(p / "results.parquet"), fp


def _read_parquet(f: Path) -> Any:
    import pandas as pd

    if not f.exists():
        raise ResultsError(f"no results in {str(f.parent)!r}: run a sweep first")
    try:
        table = pd.read_parquet(f)
    except Exception as exc:
        raise ResultsError(f"{str(f)!r} cannot be read ({type(exc).__name__}: {exc})") from None
    for k, v in _ADDED.items():
        if k not in table.columns:
            table[k] = v
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ResultsError(f"{str(f)!r} lacks the columns {', '.join(missing)}")
    return table[COLUMNS]
