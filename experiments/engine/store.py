"""The run store: ``results/NAME/`` with a directory of atomically written Parquet parts.

``runs.parquet`` is a *directory* of part files ``part-NNNNNN-TOKEN.parquet``. Each chunk is
written to a hidden temporary file, fsync'ed and atomically renamed, so a killed run (Ctrl-C,
``kill -9``) leaves only complete parts and loses at most the rows of the chunk in flight: a chunk
is written every ``chunk_rows`` rows and, from a background thread, every ``chunk_seconds``
seconds. A finished run compacts the parts into one. ``load`` reads every part and drops
duplicate identities, so even a kill during compaction never duplicates a row.

A part that cannot be read back (truncated, zeroed or garbled: parts carry page checksums) is
never read silently: ``load`` raises ``UnreadablePart`` naming it, or, for ``run``, moves it
aside into ``results/NAME/quarantine/`` (kept for inspection) so that its rows are recomputed.

Identity includes ``code_version`` (the code that computed the row, ``engine.fingerprint``): a
table may hold a current and a stale row of the same (cell, trial, master seed) until the run
that recomputed it compacts the table with ``drop`` (the superseded stale rows). Tables written
before the column existed load with ``code_version`` None: stale, whatever the current code.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lottery_common import check_int

from .keys import IDENTITY, METADATA_COLUMNS

REQUIRED_COLUMNS: tuple[str, ...] = ("cell_key", "trial", "master_seed")
"""Columns every part must hold (``code_version`` is added as None to tables written before it)."""


class UnreadablePart(ValueError):
    """A part of a results table that cannot be read back (truncated, zeroed, garbled)."""

    def __init__(self, path: Path, reason: str, name: str, root: Path) -> None:
        self.path, self.reason = path, reason
        out = "" if root == Path(".") else f" --out {root}"
        super().__init__(f"results part {path} is unreadable ({reason}); run `lottery-lab run "
                         f"{name}{out}` to move it aside and recompute its rows")


def one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its type when it has none)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def read_part(path: Path) -> pd.DataFrame:
    """One part, its page checksums verified; raises ``ValueError`` or ``OSError`` (or any
    pyarrow error) when it cannot be read back whole."""
    frame = pd.read_parquet(path, page_checksum_verification=True)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"not a results part: no column {', '.join(missing)}")
    return frame


class RunStore:
    """``ROOT/results/NAME/``: ``runs.parquet/`` parts, ``manifest.json``, ``validate.json``."""

    def __init__(self, root: str | os.PathLike[str], name: str) -> None:
        self.root = Path(root)
        self.name = name
        self.dir = self.root / "results" / name
        self.table = self.dir / "runs.parquet"

    @property
    def validate_path(self) -> Path:
        return self.dir / "validate.json"

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    @property
    def failures_path(self) -> Path:
        return self.dir / "failures.json"

    @property
    def quarantine_dir(self) -> Path:
        return self.dir / "quarantine"

    @property
    def figure_stem(self) -> Path:
        return self.root / "figures" / self.name

    def parts(self) -> list[Path]:
        if not self.table.is_dir():
            return []
        return sorted(self.table.glob("part-*.parquet"))

    def _next_sequence(self) -> int:
        seqs = [int(p.name.split("-")[1]) for p in self.parts()]
        return max(seqs, default=0) + 1

    def append(self, rows: Sequence[Mapping[str, Any]]) -> Path | None:
        """Write ``rows`` as one new part (temporary file, fsync, atomic rename)."""
        if not rows:
            return None
        self.table.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:8]
        final = self.table / f"part-{self._next_sequence():06d}-{token}.parquet"
        tmp = self.table / f".tmp-{token}.parquet"
        frame = pd.DataFrame(list(rows))
        try:
            with open(tmp, "wb") as handle:  # opened here: a refused write names the file
                frame.to_parquet(handle, index=False, write_page_checksum=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        except BaseException:
            _discard(tmp)
            raise
        return final

    def load(self, *, quarantine: Callable[[Path, Path, str], None] | None = None
             ) -> pd.DataFrame:
        """Every saved row (each identity once, the earliest written kept).

        Rows written before ``code_version`` existed get ``code_version`` None. A part that
        cannot be read raises ``UnreadablePart`` (a one-line ValueError naming it); with
        ``quarantine``, it is moved into ``quarantine_dir`` instead, ``quarantine(old, new,
        reason)`` is called and its rows are missing from the result.
        """
        frames = []
        parts = self.parts()
        retried = False
        while parts:
            path = parts.pop(0)
            try:
                frames.append(read_part(path))
            except FileNotFoundError:
                if path.exists() or retried:
                    raise
                # compacted away by a concurrent run while we read: read the table again
                frames, parts, retried = [], self.parts(), True
            except (KeyboardInterrupt, SystemExit, MemoryError):
                raise
            except Exception as exc:  # noqa: BLE001 - any failure to read it back is corruption
                reason = re.sub(r"^Could not open Parquet input source '.*?': ", "",
                                one_line(exc))  # the path is said already
                if quarantine is None:
                    raise UnreadablePart(path, reason, self.name, self.root) from None
                quarantine(path, self._move_aside(path), reason)
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=list(METADATA_COLUMNS))
        runs = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        if "code_version" not in runs.columns:
            runs = runs.assign(code_version=pd.Series([None] * len(runs), index=runs.index,
                                                      dtype=object))
        runs = runs.drop_duplicates(subset=list(IDENTITY), keep="first").reset_index(drop=True)
        first = [c for c in METADATA_COLUMNS if c in runs.columns]
        return runs[first + [c for c in runs.columns if c not in METADATA_COLUMNS]]

    def _move_aside(self, part: Path) -> Path:
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        target = self.quarantine_dir / part.name
        while target.exists():
            target = self.quarantine_dir / f"{part.stem}-{uuid.uuid4().hex[:8]}{part.suffix}"
        os.replace(part, target)
        return target

    def compact(self, drop: Callable[[pd.DataFrame], pd.Series] | None = None) -> None:
        """Rewrite all parts as one, without the rows where ``drop(runs)`` is true.

        Safe to interrupt: ``load`` drops duplicate identities, and a dropped row that survives
        in an old part is dropped again by the next compaction.
        """
        old = self.parts()
        if not old:
            return
        runs = self.load()
        dropped = drop(runs).to_numpy(bool) if drop is not None else np.zeros(len(runs), bool)
        if len(old) == 1 and not dropped.any():
            return
        self.append(runs[~dropped].to_dict("records"))
        for part in old:
            part.unlink()

    def clean_temporaries(self) -> None:
        if self.table.is_dir():
            for tmp in self.table.glob(".tmp-*.parquet"):
                tmp.unlink()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on ``results/NAME/.lock`` (released even on ``kill -9``).

        Two runs writing the same table at once raise a ValueError instead of racing.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            yield
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise ValueError(f"another run is writing {self.table}; wait for it to finish "
                                 f"(lock file {self.dir / '.lock'})") from None
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def clear(self) -> None:
        """Delete the saved rows, verdicts, manifest and failures of this experiment."""
        if self.table.exists():
            shutil.rmtree(self.table)
        for path in (self.validate_path, self.manifest_path, self.failures_path):
            path.unlink(missing_ok=True)


class ChunkWriter:
    """Buffer finished rows and append them to a ``RunStore`` in chunks.

    A chunk is written when ``chunk_rows`` rows are buffered, and a background thread writes
    whatever is buffered every ``chunk_seconds`` seconds, so a killed run loses at most the rows
    finished in the last ``chunk_seconds`` (and the trials still running), however slowly rows
    arrive. ``close`` writes the rest (it runs on Ctrl-C too).
    """

    def __init__(self, store: RunStore, *, chunk_rows: int, chunk_seconds: float) -> None:
        self.store = store
        self.chunk_rows = check_int("chunk_rows", chunk_rows, minimum=1)
        self.chunk_seconds = float(chunk_seconds)
        if not self.chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds}")
        self.n_written = 0
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._tick, name="chunk-writer", daemon=True)
        self._thread.start()

    def _flush(self) -> None:  # with the lock held
        if self._rows:
            self.store.append(self._rows)
            self.n_written += len(self._rows)
            self._rows = []

    def _tick(self) -> None:
        while not self._stop.wait(self.chunk_seconds):
            with self._lock:
                try:
                    self._flush()
                except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                    self._error = exc
                    return

    def add(self, row: dict[str, Any]) -> None:
        if self._error is not None:
            raise self._error
        with self._lock:
            self._rows.append(row)
            if len(self._rows) >= self.chunk_rows:
                self._flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            self._flush()
        if self._error is not None:
            raise self._error


def load_runs(root: str | os.PathLike[str], name: str) -> pd.DataFrame:
    """Every saved row of experiment ``name`` under ``root/results/``."""
    return RunStore(root, name).load()


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def _discard(path: Path) -> None:
    """Delete a temporary file if it is there (never raising: the caller is re-raising)."""
    with contextlib.suppress(OSError):
        path.unlink()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
