"""Where planegate's state lives and the process-wide settings; configuration enters here only.

``PLANEGATE_HOME`` (default ``~/.planegate``) holds ``ledger.db``, ``artifacts/<run>/…``,
``worktrees/<run>/<task>/`` and the browser profile. Tests point it at a temporary directory.
"""

from __future__ import annotations

import getpass
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # the ledger's modules load when a store is opened, not when settings are read
    from planegate.store import Store


def planegate_home() -> Path:
    """``$PLANEGATE_HOME`` or ``~/.planegate``, absolute."""
    configured = os.environ.get("PLANEGATE_HOME")
    return (Path(configured).expanduser() if configured else Path.home() / ".planegate").resolve()


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def process_id() -> str:
    """Names this process in leases: host, pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Settings(BaseModel):
    """What a planegate process needs to know about its environment."""

    model_config = ConfigDict(frozen=True)

    home: Path
    actor: str
    job_lease_s: float = 30.0
    job_poll_s: float = 0.5
    worker_concurrency: int = 4
    review_reread_s: float = Field(default=120.0, gt=0)  # a pending review is re-read this long after it was last seen

    @classmethod
    def from_env(cls, actor: str | None = None) -> Settings:
        """Settings from the environment: PLANEGATE_HOME, PLANEGATE_JOB_LEASE_S, PLANEGATE_WORKERS,
        PLANEGATE_REVIEW_REREAD_S."""
        values: dict[str, object] = {"home": planegate_home(), "actor": actor or f"user:{os_user()}"}
        for name, key in (
            ("PLANEGATE_JOB_LEASE_S", "job_lease_s"),
            ("PLANEGATE_WORKERS", "worker_concurrency"),
            ("PLANEGATE_REVIEW_REREAD_S", "review_reread_s"),
        ):
            if os.environ.get(name):
                values[key] = os.environ[name]
        return cls.model_validate(values)

    @property
    def ledger_path(self) -> Path:
        return self.home / "ledger.db"

    @property
    def worktrees(self) -> Path:
        return self.home / "worktrees"

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    @property
    def browser_dir(self) -> Path:
        return self.home / "browser"

    def open_store(self) -> Store:
        from planegate.store import Store

        return Store(self.ledger_path, actor=self.actor)
