"""The git remote a run is published to (read by ``get_status`` and ``publish_run``)."""

from __future__ import annotations

from ..errors import GitError
from ..gitrepo import GitRepo


def publish_remote_url(repo: GitRepo, remote: str) -> str | None:
    """The URL of a git remote of ``repo``, or None when it has no such remote."""
    try:
        return repo.git("remote", "get-url", "--", remote).strip() or None
    except GitError:
        return None
