"""The git adapter: everything planegate does to a repository, one git process per command.

Rules that hold for every call: argv lists only; names are validated before they get here and
never start with ``-``; ``--`` separates options from paths; refs move by compare-and-set
(``update-ref <ref> <new> <old>``) so two sessions cannot both move one branch. planegate never
touches the user's working tree or current branch: merges are computed with
``git merge-tree --write-tree`` (a temporary worktree on git < 2.38) and committed with
``commit-tree``. Commits planegate makes carry the repository's identity, or the documented
default ``planegate <planegate@localhost>`` on a machine that has none.

Concurrency: MCP clients call tools at once, so one ``GitRepo`` is used by many threads. It
holds only paths; every command is its own process and branch tips are read from the ref files
per call. (gitpython's ``Repo`` keeps persistent ``cat-file`` processes that are not
thread-safe: with several threads it answered with other branches' commits, then hung.) What
must not interleave within a process — worktree add/remove/prune and writes to
``info/exclude`` — holds the repository's lock, keyed by its common git dir; the lock is held
only around git, never while waiting for the ledger, so the two cannot deadlock.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GitError, InvalidInput

DEFAULT_IDENTITY = ("planegate", "planegate@localhost")
ZERO = "0" * 40
# A git command that takes longer than this is stuck (or the repository is enormous); either
# way the caller gets an answer instead of a call that never returns.
GIT_TIMEOUT_S = 600.0
# Variables that would point git at another repository than the one whose path we hold (set,
# e.g., when planegate is started from a git hook); the ref files read directly ignore them too.
_RELOCATING = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_IMPLICIT_WORK_TREE",
        "GIT_COMMON_DIR",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
        "GIT_PREFIX",
    }
)
_SHA = re.compile(rb"[0-9a-f]{40}(?:[0-9a-f]{24})?")
# Branch names whose ref file path is exactly refs/heads/<name>; anything else is asked of git.
_PLAIN_BRANCH = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*(?<!\.lock)(?<!\.)")


@dataclass(frozen=True)
class FileChange:
    path: str
    added: int
    deleted: int
    binary: bool = False


@dataclass(frozen=True)
class DiffFacts:
    """What a task changed between two commits: line counts, the unified diff, and every path's
    modes and blob ids (``raw``; ``120000`` is a symlink)."""

    base: str
    head: str
    files: list[FileChange]
    text: str
    sha256: str
    raw: list[RawChange] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]


@dataclass(frozen=True)
class MergeResult:
    """A merge (``sha``: the merge commit) or a merge check of ``source`` onto ``target``; a clean
    check with git's in-memory merge carries the merged ``tree``, which the merge itself reuses."""

    ok: bool
    sha: str | None = None
    conflicts: list[str] = field(default_factory=list)
    tree: str | None = None
    target: str | None = None
    source: str | None = None


@functools.lru_cache(maxsize=1)
def _git_version() -> tuple[int, ...]:
    try:
        out = subprocess.run(
            ["git", "version"], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"could not run git: {exc}; install git (2.38 or later merges without a worktree)") from exc
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(part) for part in found.groups(default="0")) if found else (0,)


def _run_git(cwd: Path, args: tuple[str, ...], env: Mapping[str, str] | None) -> tuple[int, bytes, bytes]:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=_environment(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GitError(
            f"git {' '.join(args[:3])} did not finish within {GIT_TIMEOUT_S:.0f} s in {cwd} and was stopped; "
            "check the repository for a stuck lock file, then retry"
        ) from exc
    except OSError as exc:  # git is missing, or the directory is gone
        raise GitError(f"could not run git in {cwd}: {exc}") from exc
    return done.returncode, done.stdout, done.stderr


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    """``env`` (default: this process's) without the variables that point git at another repository."""
    source = os.environ if env is None else env
    return {key: value for key, value in source.items() if key not in _RELOCATING}


def _serialised(args: tuple[str, ...]) -> bool:
    return len(args) >= 2 and args[0] == "worktree" and args[1] != "list"


_LOCKS_GUARD = threading.Lock()
_LOCKS: dict[str, threading.RLock] = {}


def repository_lock(common_dir: Path) -> threading.RLock:
    """The process-wide lock of one repository (keyed by its common git dir, so every worktree of
    it shares the lock). Held only around git commands, never while taking the ledger's lock."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(common_dir), threading.RLock())


class _Unknown:
    """The ref files cannot answer (a symbolic or unreadable ref): ask git."""


log = logging.getLogger("planegate.git")
RETIRED_PREFIX = ".removing-"  # a retired worktree's directory, set aside until it is deleted

_ASK_GIT = _Unknown()
UNKNOWN = _ASK_GIT


def _read_ref(common: Path, ref: str) -> str | _Unknown | None:
    """A ref's sha from the loose ref file, then ``packed-refs``; ``_ASK_GIT`` when the files cannot tell."""
    try:
        loose: bytes | None = (common / ref).read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        loose = None
    except OSError:
        return _ASK_GIT
    if loose is not None:
        sha = loose.strip()
        return sha.decode() if _SHA.fullmatch(sha) else _ASK_GIT
    try:
        packed = (common / "packed-refs").read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return _ASK_GIT
    needle = b" " + ref.encode()
    at = packed.find(needle + b"\n")
    if at < 0 and packed.endswith(needle):
        at = len(packed) - len(needle)
    if at < 0:
        return None
    sha = packed[packed.rfind(b"\n", 0, at) + 1 : at]
    return sha.decode() if _SHA.fullmatch(sha) else _ASK_GIT


class RefReader:
    """Branch tips of one repository read from its ref files, with no git process and no check
    that the path is a repository (``GitRepo`` does that): for callers that must not wait for
    git, such as ``get_status``. ``branch_sha`` answers ``UNKNOWN`` when the files cannot tell (a
    worktree layout it does not know, a reftable, a symbolic or unusual ref): then ask ``GitRepo``.
    """

    def __init__(self, root: Path | str) -> None:
        self.common = _common_dir(Path(root))

    def branch_sha(self, branch: str) -> str | _Unknown | None:
        if self.common is None or not _PLAIN_BRANCH.fullmatch(branch) or ".." in branch:
            return UNKNOWN
        return _read_ref(self.common, f"refs/heads/{branch}")


def _common_dir(root: Path) -> Path | None:
    """The common git directory of the repository whose top level is ``root``, found as git finds
    it (a ``.git`` directory, or a ``.git`` file naming the git dir, whose ``commondir`` file
    names the common one); None when that is not how it is laid out, or refs live in a reftable."""
    dot_git = root / ".git"
    try:
        if dot_git.is_dir():
            git_dir = dot_git
        else:
            pointer = dot_git.read_text(encoding="utf-8").strip()
            if not pointer.startswith("gitdir: "):
                return None
            git_dir = root / pointer.removeprefix("gitdir: ").strip()
        commondir = git_dir / "commondir"
        common = git_dir / commondir.read_text(encoding="utf-8").strip() if commondir.is_file() else git_dir
        common = common.resolve()
    except (OSError, ValueError):
        return None
    if (common / "reftable").exists() or not (common / "HEAD").is_file():
        return None
    return common


class GitRepo:
    """One repository (or one of its worktrees), opened by path. Holds paths only: safe to share."""

    def __init__(self, path: Path | str) -> None:
        target = Path(path).expanduser()
        if not target.exists():
            raise InvalidInput(f"repo {str(path)!r} does not exist; pass the path of a git repository")
        if not target.is_dir():
            raise InvalidInput(f"repo {str(path)!r} is a file, not a git repository; pass the repository root")
        target = target.resolve()
        where = ("rev-parse", "--is-bare-repository", "--absolute-git-dir", "--git-common-dir", "--show-toplevel")
        status, out, _ = _run_git(target, where, None)
        lines = out.decode("utf-8", "replace").splitlines()
        if lines[:1] == ["true"]:
            raise InvalidInput(f"repo {str(path)!r} is a bare repository; pass a repository with a working tree")
        if status != 0 or len(lines) < 4:
            raise InvalidInput(
                f"repo {str(path)!r} is not a git repository; run `git init` there or pass the repository root"
            )
        toplevel = Path(lines[3]).resolve()
        if toplevel != target:
            raise InvalidInput(f"repo {str(path)!r} is inside the git repository {str(toplevel)!r}; pass its root")
        self.root = toplevel
        self.git_dir = Path(lines[1]).resolve()
        self._common = (target / lines[2]).resolve()
        self._lock = repository_lock(self._common)
        # Branch tips are read from the ref files (no process) unless refs live in a reftable.
        self._files_refs = not (self._common / "reftable").exists()
        # git merge-tree --write-tree (2.38+) merges without a worktree; older git uses a scratch one.
        self.merge_in_memory = _git_version() >= (2, 38)
        self._identity: tuple[tuple[object, ...], tuple[str, str]] | None = None

    # -- plumbing -------------------------------------------------------------------------

    def git(self, *args: str, env: dict[str, str] | None = None, ok_codes: tuple[int, ...] = (0,)) -> str:
        """Run ``git <args>`` in this repository; stdout without its trailing newline."""
        status, out, err = self._run(args, env)
        if status not in ok_codes:
            raise GitError(f"git {' '.join(args[:3])} failed in {self.root} (exit {status}): {err.strip()[:600]}")
        return out

    def _run(self, args: tuple[str, ...], env: dict[str, str] | None = None) -> tuple[int, str, str]:
        status, out, err = self._run_bytes(args, env)
        return status, out.decode("utf-8", "replace").rstrip("\n"), err.decode("utf-8", "replace")

    def _run_bytes(self, args: tuple[str, ...], env: dict[str, str] | None = None) -> tuple[int, bytes, bytes]:
        """One git process; worktree administration waits for this repository's lock."""
        if _serialised(args):
            with self._lock:
                return _run_git(self.root, args, env)
        return _run_git(self.root, args, env)

    def rev(self, ref: str) -> str | None:
        """The commit ``ref`` names, or None."""
        if ref.startswith("-"):
            raise InvalidInput(f"ref {ref!r} may not start with '-'")
        status, out, _ = self._run(("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"))
        return out.strip() if status == 0 and out.strip() else None

    def branch_sha(self, branch: str) -> str | None:
        """A local branch's tip, or None when the branch does not exist.

        Read from the loose ref file, then ``packed-refs`` (git writes both by rename, and packs a
        ref before deleting its loose file, so the two reads never miss a ref that exists); a
        symbolic ref, an unusual name or a reftable repository is asked of ``git rev-parse``.
        """
        ref = f"refs/heads/{branch}"
        if self._files_refs and _PLAIN_BRANCH.fullmatch(branch) and ".." not in branch:
            found = self._read_ref_files(ref)
            if not isinstance(found, _Unknown):
                return found
        status, out, _ = self._run(("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"))
        return out.strip() if status == 0 and out.strip() else None

    def _read_ref_files(self, ref: str) -> str | _Unknown | None:
        return _read_ref(self._common, ref)

    def has_commits(self) -> bool:
        return self.rev("HEAD") is not None

    def update_ref(self, ref: str, new: str, old: str | None) -> bool:
        """Move ``ref`` to ``new`` only if it is at ``old`` (``None``: only if it does not exist)."""
        status, _, _ = self._run(("update-ref", "--no-deref", ref, new, old or ZERO))
        return status == 0

    def delete_ref(self, ref: str, old: str) -> bool:
        status, _, _ = self._run(("update-ref", "-d", ref, old))
        return status == 0

    def identity(self) -> tuple[str, str]:
        """The repository's committer identity (as git resolves its config), or the documented default.

        Asked of git once, then again only when a config file git reads (or a variable naming one)
        changed; config files that include others are not followed, so with one git is asked every time."""
        signature = _config_signature(self._common)
        cached = self._identity
        if signature is not None and cached is not None and cached[0] == signature:
            return cached[1]
        status, out, _ = self._run(("config", "-z", "--get-regexp", r"^user\.(name|email)$"))
        values: dict[str, str] = {}
        for entry in out.split("\0") if status == 0 else []:
            key, _, value = entry.partition("\n")
            values[key.strip().lower()] = value  # the last value git lists is the one that applies
        found = values.get("user.name") or DEFAULT_IDENTITY[0], values.get("user.email") or DEFAULT_IDENTITY[1]
        if signature is not None:
            self._identity = (signature, found)
        return found

    def identity_env(self, author: tuple[str, str] | None = None) -> dict[str, str]:
        name, email = self.identity()
        author_name, author_email = author or (name, email)
        return {
            **os.environ,
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }

    def common_dir(self) -> Path:
        return self._common

    # -- worktrees --------------------------------------------------------------------------

    def add_worktree(self, path: Path, branch: str, base: str) -> None:
        """Check ``branch`` out in a new worktree at ``path``, creating it at ``base`` if it does
        not exist yet (the check and the add hold the repository's lock together)."""
        with self._lock:
            if self.branch_sha(branch) is not None:
                self.git("worktree", "add", "--quiet", "--", str(path), branch)
            else:
                self.git("worktree", "add", "--quiet", "-b", branch, "--", str(path), base)

    def remove_worktree(self, path: Path | str, *, force: bool = False) -> None:
        args = ["worktree", "remove", *(["--force"] if force else []), "--", str(path)]
        self.git(*args)

    def retire_worktree(self, path: Path | str) -> None:
        """Remove a clean worktree at once: its directory is renamed aside (``.removing-…``, deleted
        by a background thread) and git's record of it deleted, as ``git worktree remove`` does
        but without waiting for every file to be unlinked. The caller has checked that nothing is
        uncommitted. A layout this does not know (a locked worktree, a record outside this
        repository) goes through ``git worktree remove``, which may refuse."""
        worktree = Path(path)
        admin = self._worktree_record(worktree)
        if admin is None:
            self.remove_worktree(worktree)
            return
        aside = worktree.parent / f"{RETIRED_PREFIX}{worktree.name}-{os.getpid()}-{threading.get_ident()}"
        worktree.rename(aside)
        shutil.rmtree(admin)
        _delete_in_background(worktree.parent)

    def _worktree_record(self, worktree: Path) -> Path | None:
        """The directory where git keeps a linked worktree's record (``<common>/worktrees/<id>``),
        when the worktree's ``.git`` file names one of this repository's and it is not locked."""
        try:
            pointer = (worktree / ".git").read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        if not pointer.startswith("gitdir: "):
            return None
        admin = (worktree / pointer.removeprefix("gitdir: ")).resolve()
        if admin.parent != (self._common / "worktrees").resolve() or not admin.is_dir():
            return None
        try:
            back = Path((admin / "gitdir").read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError):
            return None
        if (admin / "locked").exists() or back.resolve() != (worktree / ".git").resolve():
            return None
        return admin

    def prune_worktrees(self) -> None:
        self.git("worktree", "prune")

    def exclude(self, pattern: str) -> None:
        """Keep ``pattern`` out of every worktree's ``git status``/``add`` (shared info/exclude)."""
        exclude = self._common / "info" / "exclude"
        with self._lock:
            exclude.parent.mkdir(parents=True, exist_ok=True)
            current = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
            if pattern not in current.splitlines():
                with exclude.open("a", encoding="utf-8") as handle:
                    handle.write(("" if current.endswith("\n") or not current else "\n") + pattern + "\n")

    def dirty_paths(self) -> list[str]:
        """Uncommitted changes in this worktree (untracked files included)."""
        return dirty_paths(self.root)

    def commit_all(self, message: str, author: tuple[str, str] | None = None) -> str | None:
        """Commit every change in this worktree; the new head, or None when nothing changed."""
        if not self.dirty_paths():
            return None
        self.git("add", "-A", "--", ".")
        self.git("commit", "--quiet", "--no-verify", "-m", message, env=self.identity_env(author))
        return self.rev("HEAD")

    # -- facts ------------------------------------------------------------------------------

    def diff(self, base: str, head: str) -> DiffFacts:
        """The change ``base..head``: per-file line counts and modes, the unified diff and its
        sha256, from one git process.

        git prints the ``-z`` listing (raw entries, then numstat entries, each field ending in NUL),
        an empty field, then the patch, byte for byte what ``git diff`` alone prints. No field of
        the listing is empty (paths never are), so the first two NULs in a row end it, whatever
        the patch holds (a text file with a NUL past git's binary sniff puts one in it)."""
        args = (
            "diff", "--raw", "--numstat", "--patch", "-z", "--no-renames", "--no-abbrev", "--full-index",
            "--binary", "--no-color", "--no-ext-diff", base, head, "--",
        )  # fmt: skip
        status, out, err = self._run_bytes(args)
        if status != 0:
            raise GitError(f"git diff {base[:12]} {head[:12]} failed in {self.root}: {err.decode(errors='replace')}")
        listing, _, text = out.partition(b"\0\0")
        files, raw = _parse_raw_numstat(listing)
        return DiffFacts(base, head, files, text.decode("utf-8", "replace"), hashlib.sha256(text).hexdigest(), raw)

    def show(self, sha: str, path: str) -> bytes | None:
        """A file's bytes at a commit, or None when it does not exist there."""
        status, out, _ = self._run_bytes(("cat-file", "blob", f"{sha}:{path}"))
        return out if status == 0 else None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        status, _, _ = self._run(("merge-base", "--is-ancestor", ancestor, descendant))
        return status == 0

    # -- merging ----------------------------------------------------------------------------

    def merge(
        self,
        target_branch: str,
        source: str,
        message: str,
        *,
        checked: MergeResult | None = None,
        env: dict[str, str] | None = None,
    ) -> MergeResult:
        """Merge ``source`` into ``target_branch`` with a --no-ff merge commit; never half-done.

        The target branch moves by compare-and-set; on a conflict nothing moves and the
        conflicting files are listed. ``checked``: a clean ``merge_check`` of ``source`` onto the
        branch's current tip, whose tree is committed instead of merging again. ``env``: the
        identity environment (``identity_env``) when the caller has it already.
        """
        target = self.branch_sha(target_branch)
        if target is None:
            raise GitError(f"branch {target_branch!r} is missing in {self.root}; was it deleted by hand?")
        if self.merge_in_memory:
            reusable = checked and checked.ok and checked.tree and (checked.target, checked.source) == (target, source)
            check = checked if checked is not None and reusable else self.merge_check(target, source)
            if not check.ok or check.tree is None:
                return MergeResult(False, conflicts=check.conflicts)
            parents = ("-p", target, "-p", source, "-m", message)
            identity = env or self.identity_env()
            status, out, err = self._run(("commit-tree", check.tree, *parents), identity)
            if status != 0 and check is checked:  # the checked tree is gone (pruned): merge again
                check = self.merge_check(target, source)
                if not check.ok or check.tree is None:
                    return MergeResult(False, conflicts=check.conflicts)
                status, out, err = self._run(("commit-tree", check.tree, *parents), identity)
            if status != 0:
                raise GitError(f"git commit-tree failed in {self.root} (exit {status}): {err.strip()[:600]}")
            sha = out.strip()
        else:
            result = self._merge_in_scratch_worktree(target, source, message)
            if not result.ok or result.sha is None:
                return result
            sha = result.sha
        if not self.update_ref(f"refs/heads/{target_branch}", sha, target):
            raise GitError(f"branch {target_branch!r} moved while merging; call accept again")
        return MergeResult(True, sha, target=target, source=source)

    def _merge_in_scratch_worktree(self, target: str, source: str, message: str) -> MergeResult:
        scratch = Path(tempfile.mkdtemp(prefix="planegate-merge-"))
        path = scratch / "wt"
        self.git("worktree", "add", "--quiet", "--detach", "--", str(path), target)
        try:
            worktree = GitRepo(path)
            status, _, _ = worktree._run(("merge", "--no-ff", "--no-commit", "--no-edit", source))
            if status != 0:
                conflicts = worktree.git("diff", "--name-only", "--diff-filter=U").splitlines()
                worktree._run(("merge", "--abort"))
                return MergeResult(False, conflicts=sorted(set(conflicts)))
            worktree.git("commit", "--quiet", "--no-verify", "-m", message, env=self.identity_env())
            return MergeResult(True, worktree.rev("HEAD"))
        finally:
            self.git("worktree", "remove", "--force", "--", str(path))
            shutil.rmtree(scratch, ignore_errors=True)

    def merge_check(self, target: str, source: str) -> MergeResult:
        """Would ``source`` merge cleanly onto ``target``? No ref moves; with git's in-memory merge
        the merged tree is written to the object store and returned (``tree``)."""
        if self.merge_in_memory:
            status, out, err = self._run(("merge-tree", "--write-tree", "--name-only", "--no-messages", target, source))
            lines = out.splitlines()
            if status == 0 and lines:
                return MergeResult(True, tree=lines[0].strip(), target=target, source=source)
            if status == 1:
                conflicts = sorted({p for p in lines[1:] if p})
                return MergeResult(False, conflicts=conflicts, target=target, source=source)
            raise GitError(f"git merge-tree failed in {self.root}: {err.strip()[:600]}")
        return MergeResult(True, target=target, source=source)  # old git: the merge itself reports conflicts

    def tree_of(self, commit: str) -> str | None:
        """The tree id of ``commit``: read from its loose object file when it has one (a commit
        planegate just made usually does), else asked of git."""
        if _SHA.fullmatch(commit.encode()):
            try:
                data = zlib.decompress((self._common / "objects" / commit[:2] / commit[2:]).read_bytes())
            except (OSError, zlib.error):
                data = b""
            if data.startswith(b"commit ") and b"\0tree " in data[:40]:
                tree = data[data.index(b"\0tree ") + 6 :][:40]
                if _SHA.fullmatch(tree):
                    return tree.decode()
        status, out, _ = self._run(("rev-parse", "--verify", "--quiet", "--end-of-options", f"{commit}^{{tree}}"))
        return out.strip() if status == 0 and out.strip() else None

    def tag(self, name: str, sha: str) -> bool:
        return self.update_ref(f"refs/tags/{name}", sha, None)


_TRAILER_SAFE = re.compile(r"[\r\n]+")


def trailers(pairs: dict[str, Any]) -> str:
    return "\n".join(f"{key}: {_TRAILER_SAFE.sub(' ', str(value))}" for key, value in pairs.items())


# -- modes, symlinks and blobs of a change ----------------------------------------------------
# Module functions on purpose: each runs its own git process in the repository's root and shares
# no object between threads.

SYMLINK_MODE = "120000"
GITLINK_MODE = "160000"


@dataclass(frozen=True)
class RawChange:
    """One path of ``git diff --raw base head``: modes and blob ids before and after."""

    path: str
    old_mode: str
    new_mode: str
    old_blob: str
    new_blob: str
    status: str

    @property
    def is_symlink(self) -> bool:
        return self.new_mode == SYMLINK_MODE and self.status != "D"


def _git_bytes(root: Path, *args: str, stdin: bytes | None = None) -> bytes:
    import subprocess

    try:
        done = subprocess.run(["git", *args], cwd=root, input=stdin, capture_output=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git {' '.join(args[:2])} could not run in {root}: {exc}") from exc
    if done.returncode != 0:
        raise GitError(
            f"git {' '.join(args[:2])} failed in {root} (exit {done.returncode}): "
            f"{done.stderr.decode('utf-8', 'replace').strip()[:600]}"
        )
    return done.stdout


def _parse_raw_numstat(out: bytes) -> tuple[list[FileChange], list[RawChange]]:
    """``git diff --raw --numstat -z`` (either part may be absent): the line counts and the raw
    entries. A raw entry is ``:modes blobs status`` then its path; a numstat entry is
    ``added TAB deleted TAB path`` (``-`` counts for a binary file), and never starts with ``:``."""
    fields = out.decode("utf-8", "surrogateescape").split("\0")
    files: list[FileChange] = []
    changes: list[RawChange] = []
    index = 0
    while index < len(fields):
        entry = fields[index]
        index += 1
        if entry.startswith(":") and index < len(fields):
            old_mode, new_mode, old_blob, new_blob, status = entry[1:].split(" ")
            changes.append(RawChange(fields[index], old_mode, new_mode, old_blob, new_blob, status[:1]))
            index += 1
        elif entry.count("\t") >= 2:
            added, deleted, path = entry.split("\t", 2)
            binary = added == "-"
            files.append(FileChange(path, 0 if binary else int(added), 0 if binary else int(deleted), binary))
    return files, changes


def _config_signature(common: Path) -> tuple[object, ...] | None:
    """The contents of every config file git reads for a repository and the variables that move
    them; None when one includes other files (then only git knows what applies)."""
    environ = os.environ
    home = Path(environ.get("HOME", "~")).expanduser()
    xdg = Path(environ["XDG_CONFIG_HOME"]) if environ.get("XDG_CONFIG_HOME") else home / ".config"
    files = [common / "config", common / "config.worktree"]
    if "GIT_CONFIG_GLOBAL" in environ:
        files.append(Path(environ["GIT_CONFIG_GLOBAL"]))
    else:
        files += [home / ".gitconfig", xdg / "git/config"]
    if not environ.get("GIT_CONFIG_NOSYSTEM"):
        files.append(Path(environ.get("GIT_CONFIG_SYSTEM", "/etc/gitconfig")))
    signature: list[object] = [*sorted((k, v) for k, v in environ.items() if k.startswith("GIT_CONFIG"))]
    for path in files:
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            text = None
        except OSError:
            return None
        if text is not None and b"include" in text.lower():
            return None
        signature.append((str(path), text))
    return tuple(signature)


_deleting: set[Path] = set()
_deleting_lock = threading.Lock()


def _delete_in_background(parent: Path) -> None:
    """Delete every ``.removing-*`` directory in ``parent`` in a daemon thread: the ones just set
    aside, and any a process that stopped before deleting them left."""

    def delete() -> None:
        with _deleting_lock:
            try:
                aside = sorted(p for p in parent.glob(RETIRED_PREFIX + "*") if p not in _deleting)
            except OSError:
                aside = []
            _deleting.update(aside)
        for path in aside:
            try:
                shutil.rmtree(path)
            except OSError as exc:  # left for the next retirement in this directory
                log.warning("could not delete the worktree set aside at %s: %s", path, exc)
            finally:
                with _deleting_lock:
                    _deleting.discard(path)

    threading.Thread(target=delete, name="planegate-worktree-delete", daemon=True).start()


def dirty_paths(worktree: Path | str) -> list[str]:
    """Uncommitted changes in a worktree (untracked files included), with one git process.

    git looks for the repository in ``worktree`` itself and no higher, so a directory that is no
    longer a worktree is an error rather than the status of whatever repository holds it.
    """
    root = Path(worktree)
    env = {**_environment(None), "GIT_CEILING_DIRECTORIES": str(root.parent)}
    status, out, err = _run_git(root, ("status", "--porcelain=v1", "-z", "--untracked-files=all"), env)
    if status != 0:
        raise GitError(f"git status failed in {root} (exit {status}): {err.decode('utf-8', 'replace').strip()[:600]}")
    entries = [e for e in out.decode("utf-8", "replace").split("\0") if e]
    return [e[3:] for e in entries if len(e) > 3]


def symlink_targets(repo: GitRepo, commit: str) -> dict[str, str]:
    """Every symlink in ``commit``'s tree and the target it stores (read from git, not the disk)."""
    listing = _git_bytes(repo.root, "ls-tree", "-r", "-z", "--full-tree", commit).decode("utf-8", "surrogateescape")
    links: dict[str, str] = {}
    for entry in listing.split("\0"):
        meta, _, path = entry.partition("\t")
        parts = meta.split(" ")
        if len(parts) == 3 and parts[0] == SYMLINK_MODE:
            links[path] = parts[2]
    if not links:
        return {}
    batch = _git_bytes(repo.root, "cat-file", "--batch", stdin="".join(f"{b}\n" for b in links.values()).encode())
    targets: dict[str, str] = {}
    offset = 0
    for path in links:
        header_end = batch.index(b"\n", offset)
        size = int(batch[offset:header_end].split(b" ")[2])
        targets[path] = batch[header_end + 1 : header_end + 1 + size].decode("utf-8", "surrogateescape")
        offset = header_end + 1 + size + 1
    return targets


def read_blob(repo: GitRepo, blob: str, limit: int) -> tuple[bytes, int]:
    """The first ``limit`` bytes of a blob and its full size; never holds more than ``limit`` bytes."""
    import subprocess

    size = int(_git_bytes(repo.root, "cat-file", "-s", blob).strip())
    if size <= limit:
        return _git_bytes(repo.root, "cat-file", "blob", blob), size
    with subprocess.Popen(
        ["git", "cat-file", "blob", blob], cwd=repo.root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as proc:
        assert proc.stdout is not None
        data = proc.stdout.read(limit)
        proc.kill()
    return data, size
