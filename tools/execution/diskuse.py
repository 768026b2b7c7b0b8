"""What a run's worktrees take on disk, measured rarely and read from a cache.

Walking a worktree (a ``node_modules``, a build folder) can take seconds, and ``get_status`` must
answer in milliseconds, so a status call only reads ``disk_usage`` (one row per run). When the
figure is missing or older than ``STALE_S``, the call starts one measurement in a background
thread (at most one per run per process) and answers with what it has; the next call sees the
new figure. Measuring counts allocated blocks (``st_blocks``) of every file under
``PLANEGATE_HOME/worktrees/<run>/``, symlinks not followed (a linked dependency folder belongs to
the checkout it lives in), hard links counted once.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planegate.store import StoreError, now_iso

from ..env import Env
from ..errors import PlanegateError

STALE_S = 600.0


@dataclass(frozen=True)
class DiskUse:
    bytes: int | None  # None until first measured
    worktrees: int
    measured_at: str | None

    def text(self) -> str:
        if self.bytes is None:
            return "not measured yet (measuring now; ask again shortly)"
        return f"{self.worktrees} worktree(s), {_size(self.bytes)} (measured {self.measured_at})"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


_lock = threading.Lock()
_measuring: set[tuple[str, str]] = set()


def measure(root: Path) -> tuple[int, int]:
    """(bytes allocated, worktrees) under ``root`` (a run's worktree folder)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    worktrees = 0
    if not root.is_dir():
        return 0, 0
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.is_dir(follow_symlinks=False):
                if folder == root:
                    worktrees += 1
                stack.append(Path(entry.path))
                continue
            if info.st_nlink > 1:
                key = (info.st_dev, info.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += getattr(info, "st_blocks", 0) * 512 or info.st_size
    return total, worktrees


def refresh(env: Env, run: str) -> DiskUse:
    """Measure now and store the figure."""
    used, worktrees = measure(env.settings.worktrees / run)
    at = now_iso()
    with env.write() as w:
        w.execute(
            "INSERT OR REPLACE INTO disk_usage (run_id, bytes, worktrees, measured_at) VALUES (?, ?, ?, ?)",
            (run, used, worktrees, at),
        )
    return DiskUse(bytes=used, worktrees=worktrees, measured_at=at)


def _age_s(at: str) -> float:
    then = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
    return (dt.datetime.now(dt.UTC) - then).total_seconds()


def cached(env: Env, run: str, *, wait: bool = False) -> DiskUse:
    """The stored figure; a stale or missing one is measured again in the background (or now,
    with ``wait``, as the CLI does). Call it outside any open transaction of ``env.store``."""
    row: dict[str, Any] | None = env.store.one(
        "SELECT bytes, worktrees, measured_at FROM disk_usage WHERE run_id = ?", (run,)
    )
    if row is not None and _age_s(row["measured_at"]) < STALE_S:
        return DiskUse(bytes=row["bytes"], worktrees=row["worktrees"], measured_at=row["measured_at"])
    if wait:
        return refresh(env, run)
    key = (str(env.settings.ledger_path), run)
    with _lock:
        start = key not in _measuring
        if start:
            _measuring.add(key)
    if start:

        def work() -> None:
            try:
                refresh(env, run)
            except (PlanegateError, StoreError, sqlite3.Error, OSError):
                pass  # a figure for a status line: the next status call tries again
            finally:
                with _lock:
                    _measuring.discard(key)

        threading.Thread(target=work, name=f"disk-usage-{run}", daemon=True).start()
    if row is None:
        return DiskUse(bytes=None, worktrees=0, measured_at=None)
    return DiskUse(bytes=row["bytes"], worktrees=row["worktrees"], measured_at=row["measured_at"])
