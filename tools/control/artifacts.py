"""Artifacts: files kept under ``PLANEGATE_HOME/artifacts`` and recorded in the ledger with their sha256.

Check logs, executor output, review packets and replies, reports. ``ledger verify`` re-hashes
every recorded file, so an artifact edited or removed after the fact is found.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from planegate.store import Writer

from ..env import Env
from ..errors import InvalidInput, NotFound
from ..models import ArtifactLine

_CHUNK = 1 << 20


def store_artifact(
    w: Writer, env: Env, *, run: str, task: str | None, owner: str, source: Path, name: str | None = None
) -> ArtifactLine:
    """Record a file already under ``PLANEGATE_HOME/artifacts`` (or copy it there) with its sha256."""
    root = env.settings.artifacts.resolve()
    target = source.resolve()
    if not target.is_relative_to(root):
        folder = root / run / (task or "_run") / owner.replace(":", "-")
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / (name or source.name)
        shutil.copyfile(source, copy)
        target = copy
    sha, size = file_artifact(target)
    w.insert(
        "artifacts",
        {
            "run_id": run,
            "task_id": task,
            "owner": owner,
            "name": name or target.name,
            "path": str(target),
            "sha256": sha,
            "bytes": size,
            "created_at": w.at,
        },
    )
    return ArtifactLine(name=name or target.name, path=str(target), sha256=sha, bytes=size)


def file_artifact(path: Path) -> tuple[str, int]:
    """``(sha256 hex, size in bytes)`` of a file, read in chunks.

    Raises:
        NotFound: the file does not exist.
        InvalidInput: the path is a directory.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError as exc:
        raise NotFound(f"artifact {str(path)!r} does not exist; record the path of a file that was written") from exc
    except IsADirectoryError as exc:
        raise InvalidInput(f"artifact {str(path)!r} is a directory; record a file inside it instead") from exc
    return digest.hexdigest(), size


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file, read in chunks.

    Raises:
        NotFound, InvalidInput: as ``file_artifact``.
    """
    return file_artifact(path)[0]
