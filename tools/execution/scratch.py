"""Scratch worktrees made ready by the ``[worktree]`` bootstrap, and kept for reuse per commit.

Checks need worktrees the task does not own: red→green's at the task's base (a selected run, and
the full base run integrity needs when no report is cached) and the integration head's for
``run_checks(run)``. Each gets the same bootstrap as a task's worktree, before the checks run in
it.

With ``reuse_scratch`` (the default), a bootstrapped scratch worktree is kept under
``PLANEGATE_HOME/scratch-cache/<repository>/<commit>-<key>-<n>`` and reused by the next checks job
at the same commit: the tasks dispatched from one integration head share their base's bootstrap.
Reuse is safe because the slot's key covers everything the bootstrap read: the commit (so every
committed file, lockfiles and ``inputs`` included), the ``[worktree]`` settings, the bytes of the
checkout's copy sources and of the link lockfiles in the checkout. Before each use the slot is
restored: tracked files reset to the commit, and every untracked or ignored file the bootstrap
did not leave is removed (``git clean -ffdx`` minus the bootstrap's own entries), so an overlay
or a test run's output never reaches the next job. What reuse cannot see: a toolchain upgraded
on the machine, and writes a test run makes *inside* the bootstrap's folders (a cache in
``node_modules/.cache``). Set ``reuse_scratch = false`` when those matter; delete the cache
folder to start afresh.

A slot is held by an exclusive ``flock`` on its lock file, so two jobs (in any process) never
share one; the second takes the next slot. Up to ``SLOTS_PER_KEY`` slots per commit and key,
``MAX_SLOTS`` per repository (the least recently used are removed); beyond that a scratch
worktree is made, bootstrapped and removed as without reuse.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExecutionError, GitError, InvalidInput
from ..gitrepo import GitRepo
from ..policy import Policy
from .bootstrap import BootstrapFailed, bootstrap, commit_reader, copy_sources, kept_entries, marked_key, plan, record
from .bootstrap import restore as restore_worktree
from .checkrun import remove_scratch, scratch_worktree
from .jobs import JobContext
from .toolchain import process_env

SLOTS_PER_KEY = 4
MAX_SLOTS = 8


@dataclass
class Scratch:
    """A scratch worktree in use. ``fd`` holds its slot's lock when it is a cached one."""

    path: Path
    fd: int | None = None
    reused: bool = False


def cache_root(home: Path, repo: GitRepo) -> Path:
    return home / "scratch-cache" / hashlib.sha256(str(repo.root).encode()).hexdigest()[:16]


def scratch_salt(policy: Policy, repo: GitRepo, sha: str) -> str:
    """What a cached scratch bootstrap depends on besides ``plan``'s key: the commit and the bytes
    of the checkout's copy sources."""
    copies: dict[str, str | None] = {}
    for rel in copy_sources(policy.worktree, repo.root):
        try:
            copies[rel] = hashlib.sha256((repo.root / rel).read_bytes()).hexdigest()
        except OSError:
            copies[rel] = None
    return json.dumps({"commit": sha, "copies": copies}, sort_keys=True)


def _lock(path: Path) -> int | None:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _discard(repo: GitRepo, path: Path) -> None:
    if path.exists() or path.is_symlink():
        remove_scratch(repo, path)
        shutil.rmtree(path, ignore_errors=True)


def _evict(repo: GitRepo, root: Path, keep: Path) -> None:
    slots = sorted((p for p in root.glob("*.lock") if p.with_suffix("").is_dir()), key=lambda p: p.stat().st_mtime)
    extra = len(slots) - MAX_SLOTS
    for lock_file in slots:
        if extra <= 0:
            return
        folder = lock_file.with_suffix("")
        if folder == keep:
            continue
        fd = _lock(lock_file)
        if fd is None:
            continue  # in use
        try:
            _discard(repo, folder)
            extra -= 1
        finally:
            os.close(fd)


def open_scratch(
    ctx: JobContext,
    policy: Policy,
    repo: GitRepo,
    sha: str,
    label: str,
    on_tick: Callable[[float], None] | None = None,
) -> Scratch:
    """A scratch worktree at ``sha``, bootstrapped by the policy (reused when a cached one fits).

    Raises:
        ExecutionError: the bootstrap failed (its log is recorded as an artifact); GitError: the
            worktree could not be made.
    """
    settings = policy.worktree
    if not settings.configured:
        return Scratch(scratch_worktree(ctx, repo, sha, label))
    salt = scratch_salt(policy, repo, sha)
    if settings.reuse_scratch:
        key = plan(settings, commit_reader(repo, sha), repo.root, salt).key
        root = cache_root(ctx.env.settings.home, repo)
        root.mkdir(parents=True, exist_ok=True)
        for index in range(SLOTS_PER_KEY):
            folder = root / f"{sha[:12]}-{key[:12]}-{index}"
            fd = _lock(folder.with_suffix(".lock"))
            if fd is None:
                continue
            try:
                if _reusable(folder, key):
                    os.utime(folder.with_suffix(".lock"))
                    return Scratch(folder, fd, reused=True)
                _discard(repo, folder)
                repo.prune_worktrees()  # a slot deleted by hand stays registered until pruned
                repo.git("worktree", "add", "--quiet", "--detach", "--", str(folder), sha)
                _bootstrap(ctx, policy, repo, folder, label, salt, on_tick)
                os.utime(folder.with_suffix(".lock"))
                _evict(repo, root, folder)
                return Scratch(folder, fd)
            except BaseException:
                with contextlib.suppress(GitError, OSError):
                    _discard(repo, folder)
                os.close(fd)
                raise
    path = scratch_worktree(ctx, repo, sha, label)
    try:
        _bootstrap(ctx, policy, repo, path, label, salt, on_tick)
    except BaseException:
        remove_scratch(repo, path)
        raise
    return Scratch(path)


def _reusable(folder: Path, key: str) -> bool:
    if not (folder / ".git").exists():
        return False
    try:
        worktree = GitRepo(folder)
        kept = kept_entries(worktree)
        if marked_key(worktree) != key or kept is None:
            return False
        restore_worktree(worktree, kept)
    except (GitError, InvalidInput):
        return False
    return True


def _bootstrap(
    ctx: JobContext,
    policy: Policy,
    repo: GitRepo,
    path: Path,
    label: str,
    salt: str,
    on_tick: Callable[[float], None] | None,
) -> None:
    where = f"scratch-{label}"
    try:
        outcome = bootstrap(
            worktree=path,
            checkout=repo.root,
            settings=policy.worktree,
            env=lambda: process_env(policy, ctx.run, ctx.task, path, repo.root, check=False),
            log_dir=_log_dir(ctx, label),
            on_tick=on_tick or (lambda elapsed: ctx.heartbeat(f"worktree bootstrap ({label}): {elapsed:.0f} s")),
            force=True,
            salt=salt,
        )
    except BootstrapFailed as exc:
        record(
            ctx.env,
            actor=f"worker:{ctx.worker}",
            run=ctx.run,
            task=ctx.task,
            where=where,
            worktree=path,
            failure=exc,
        )
        raise ExecutionError(f"the scratch worktree for the {label} run at {path.name}: {exc}") from exc
    actor = f"worker:{ctx.worker}"
    record(ctx.env, actor=actor, run=ctx.run, task=ctx.task, where=where, worktree=path, outcome=outcome)


def _log_dir(ctx: JobContext, label: str) -> Path:
    """Where a bootstrap's log goes (made only when a bootstrap runs)."""
    return ctx.env.settings.artifacts / ctx.run / (ctx.task or "_run") / f"job-{ctx.job['id']}-bootstrap" / label


def close_scratch(repo: GitRepo, scratch: Scratch) -> None:
    """Give a scratch worktree back: a cached slot is unlocked (restored at its next use), any
    other is removed."""
    if scratch.fd is None:
        remove_scratch(repo, scratch.path)
        return
    os.close(scratch.fd)
    scratch.fd = None


def ensure_task_bootstrap(ctx: JobContext, policy: Policy, worktree: Path, checkout: Path) -> None:
    """Before a task's checks: run its worktree's bootstrap again when its key changed (an input
    or a link lockfile changed, the checkout's lockfile moved, the worktree predates the policy).

    Raises:
        ExecutionError: the bootstrap failed (its log recorded as an artifact).
    """
    if not policy.worktree.configured:
        return
    try:
        outcome = bootstrap(
            worktree=worktree,
            checkout=checkout,
            settings=policy.worktree,
            env=lambda: process_env(policy, ctx.run, ctx.task, worktree, checkout, check=False),
            log_dir=_log_dir(ctx, "task"),
            on_tick=lambda elapsed: ctx.heartbeat(f"worktree bootstrap: {elapsed:.0f} s"),
        )
    except BootstrapFailed as exc:
        record(
            ctx.env,
            actor=f"worker:{ctx.worker}",
            run=ctx.run,
            task=ctx.task,
            where="before-checks",
            worktree=worktree,
            failure=exc,
        )
        raise ExecutionError(
            f"the task's worktree could not be made ready for its checks: {exc}; fix [worktree] or the step, "
            "commit, then run_checks again"
        ) from exc
    if outcome.ran:
        record(
            ctx.env,
            actor=f"worker:{ctx.worker}",
            run=ctx.run,
            task=ctx.task,
            where="before-checks",
            worktree=worktree,
            outcome=outcome,
        )
