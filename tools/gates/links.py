"""Committed symlinks that lead outside the repository.

A symlink is a path plus a target string that git stores as the link's blob (mode ``120000``).
Checks, red→green and reviews all run in a worktree of the task branch, so a committed link to
``/etc/passwd`` or ``../../secrets`` lets a task read (into check output and review packets) or
write files no scope covers. A target escapes when it is absolute, or when following it from the
link's directory climbs above the repository root — through other links of the same tree too,
as the kernel would, so a new link that reaches outside only through an existing one is found.

Pure: the caller passes what git says (the raw entries of ``GitRepo.diff`` and ``gitrepo.symlink_targets``
at the head); nothing here looks at the filesystem.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = ["MAX_HOPS", "LinkEscape", "escaping_links"]

# Linux gives up after 40 links (ELOOP); a chain that long is refused like an escape.
MAX_HOPS = 40


@dataclass(frozen=True)
class LinkEscape:
    path: str
    target: str
    why: str

    def describe(self) -> str:
        return f"{self.path} → {self.target} ({self.why})"


def _follow(path: str, links: Mapping[str, str]) -> str | None:
    """Why ``path`` (a link in the tree) resolves outside the root, or None when it stays inside."""
    pending = list(reversed(PurePosixPath(links[path]).parts))
    if links[path].startswith("/"):
        return "absolute target"
    resolved: list[str] = list(PurePosixPath(path).parent.parts)
    hops = 1
    through: list[str] = []
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return "climbs out of the repository" + (f" through {', '.join(through)}" if through else "")
            resolved.pop()
            continue
        resolved.append(part)
        current = "/".join(resolved)
        if current in links:
            hops += 1
            if hops > MAX_HOPS:
                return f"more than {MAX_HOPS} links deep"
            target = links[current]
            through.append(current)
            if target.startswith("/"):
                return f"absolute target through {', '.join(through)}"
            resolved.pop()
            pending.extend(reversed(PurePosixPath(target).parts))
    return None


def escaping_links(changed: Iterable[str], links: Mapping[str, str]) -> list[LinkEscape]:
    """The links among ``changed`` whose target leaves the repository.

    ``changed``: paths of symlinks the change adds or alters; ``links``: every symlink in the
    head's tree and its target (the changed ones included).
    """
    found = []
    for path in sorted(set(changed)):
        if path not in links:
            continue
        why = _follow(path, links)
        if why is not None:
            found.append(LinkEscape(path, links[path], why))
    return found
