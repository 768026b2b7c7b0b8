"""``Env``: what every domain function is given — the settings, the ledger, and lookups.

Domain functions take an ``Env`` first and nothing global. Lookups raise ``NotFound`` with the
next step; ``Env.write()`` is the ledger's write transaction with ``StoreBusy`` translated.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from planegate.store import Store, StoreBusy, Writer

from .config import Settings
from .errors import Busy, NotFound
from .gitrepo import GitRepo
from .policy import Policy


@dataclass
class Env:
    settings: Settings
    store: Store
    # Shared by every thread and by the ``as_actor`` copies (``replace`` passes both on).
    _repos: dict[str, GitRepo] = field(default_factory=dict, repr=False)
    _repos_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def open(cls, settings: Settings | None = None) -> Env:
        settings = settings or Settings.from_env()
        return cls(settings, settings.open_store())

    def close(self) -> None:
        self.store.close()

    def as_actor(self, actor: str) -> Env:
        """The same ledger and caches, with events attributed to ``actor``."""
        return replace(self, settings=self.settings.model_copy(update={"actor": actor}))

    @contextmanager
    def write(self, actor: str | None = None) -> Iterator[Writer]:
        try:
            with self.store.write(actor or self.settings.actor) as writer:
                yield writer
        except StoreBusy as exc:
            raise Busy(str(exc)) from exc

    def run_row(self, run: str) -> dict[str, Any]:
        row = self.store.one("SELECT * FROM runs WHERE id = ?", (run,))
        if row is None:
            raise NotFound(f"run {run!r} not found; call get_status() without a run to list runs, or start_run")
        return row

    def task_row(self, run: str, task: str) -> dict[str, Any]:
        row = self.store.one("SELECT * FROM tasks WHERE run_id = ? AND id = ?", (run, task))
        if row is None:
            self.run_row(run)
            raise NotFound(f"task {task!r} is not in run {run!r}; call get_status({run!r}) to see its tasks")
        return row

    def policy(self, run_row: dict[str, Any]) -> Policy:
        return _policy_from_snapshot(run_row["policy"])

    def repo(self, path: str) -> GitRepo:
        """The repository at ``path``, opened once per Env; a ``GitRepo`` holds only paths, so
        the threads that share it cannot disturb each other."""
        with self._repos_lock:
            found = self._repos.get(path)
        if found is None:
            opened = GitRepo(path)  # a git process: not under the lock
            with self._repos_lock:
                found = self._repos.setdefault(path, opened)
        return found


@functools.lru_cache(maxsize=64)
def _policy_from_snapshot(snapshot: str) -> Policy:
    return Policy.model_validate(json.loads(snapshot))
