"""Worktree bootstrap: making a fresh worktree ready before the executor and the checks run in it.

A worktree holds only committed files. The policy's ``[worktree]`` says what else it needs, done
in this order, by the server, within ``timeout_s`` in all:

1. ``copy``: files matching the globs that are untracked or ignored in the repository's checkout
   are copied in (a generated ``_version.py``, a ``.env``); a file the worktree already has, or
   one tracked at its commit, is never overwritten.
2. ``link``: paths symlinked from the checkout (``node_modules``). A link is made only while each
   of its ``lockfiles`` has the same bytes in the worktree as in the checkout, so the folder was
   installed from the lockfile the task has; a virtualenv holding an editable install of the
   checkout is never linked (it would import the checkout's code). When a link is not safe its
   ``fallback`` steps make the path instead; without one the bootstrap fails, naming why.
3. ``setup``: argv steps run in the worktree (no shell, own process group, the toolchain rules'
   environment), stopping at the first failure.

Everything the bootstrap leaves that git would list as untracked is added to the repository's
shared ``.git/info/exclude`` (anchored, one line per path), so it is never committed by an
executor and never makes the worktree dirty. Every step's output goes to one log, kept as an
artifact with its sha256.

A bootstrap's **key** hashes the ``[worktree]`` settings, the bytes of each ``inputs`` file and
link lockfile in the worktree, and which links were safe. It is written to the worktree's own git
directory (``.git/worktrees/<name>/planegate-bootstrap.json``) when the bootstrap succeeds, so a
crash halfway leaves no marker, and before a task's checks the bootstrap runs again only when the
key changed (the task edited ``uv.lock``; the checkout's ``package-lock.json`` moved).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..control.artifacts import store_artifact
from ..env import Env
from ..errors import ExecutionError, GitError
from ..gitrepo import GitRepo
from ..globs import literal_prefix, matches_any
from ..models import ArtifactLine
from ..policy import LinkSettings, WorktreeSettings, command_text
from .procs import ProcessResult, run_process
from .toolchain import editable_install_into, toolchain_for

MARKER = "planegate-bootstrap.json"
EXCLUDE_HEADER = "# planegate: files a [worktree] bootstrap made (copies, links, setup outputs)"
_TAIL_BYTES = 2500


class BootstrapFailed(ExecutionError):
    """A bootstrap step failed; ``log`` holds everything it printed (None when nothing ran)."""

    def __init__(self, message: str, log: Path | None, step: str | None = None) -> None:
        super().__init__(message)
        self.log = log
        self.step = step


@dataclass(frozen=True)
class LinkPlan:
    link: LinkSettings
    safe: bool
    why: str


@dataclass(frozen=True)
class Plan:
    """What a bootstrap of one worktree will do, and the key it will leave."""

    key: str
    links: list[LinkPlan]


@dataclass
class Outcome:
    """What a bootstrap did."""

    ran: bool
    key: str
    log: Path | None = None
    duration_s: float = 0.0
    done: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.ran:
            return "worktree bootstrap: already done for this key"
        what = "; ".join(self.done) or "nothing to do"
        return f"worktree bootstrap in {self.duration_s:.1f} s: {what}"


# --- reading -------------------------------------------------------------------------------


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _tracked(repo: Path, paths: list[str]) -> set[str]:
    """The subset of ``paths`` (or paths below them) git tracks in ``repo``."""
    if not paths:
        return set()
    out = GitRepo(repo).git("ls-files", "-z", "--", *paths)
    return {p for p in out.split("\0") if p}


def _untracked(worktree: GitRepo) -> set[str]:
    """Entries git lists as untracked (not ignored), directories collapsed."""
    out = worktree.git("status", "--porcelain=v1", "-z", "--untracked-files=normal")
    return {e[3:] for e in out.split("\0") if e.startswith("?? ")}


def leftovers(worktree: GitRepo) -> list[str]:
    """Untracked and ignored entries, directories collapsed: what a bootstrap left."""
    out = worktree.git("status", "--porcelain=v1", "-z", "--untracked-files=normal", "--ignored=traditional")
    return sorted(e[3:] for e in out.split("\0") if e.startswith(("?? ", "!! ")))


def link_plan(link: LinkSettings, worktree_file: Callable[[str], bytes | None], checkout: Path) -> LinkPlan:
    """Whether ``link`` may be made in a worktree whose files ``worktree_file`` reads."""
    source = checkout / link.path
    if not source.exists():
        return LinkPlan(link, False, f"the checkout has no {link.path}")
    for lockfile in link.lockfiles:
        mine = worktree_file(lockfile)
        theirs = checkout / lockfile
        if mine is None or not theirs.is_file():
            where = "the worktree" if mine is None else "the checkout"
            return LinkPlan(link, False, f"{lockfile} is missing in {where}")
        if theirs.read_bytes() != mine:
            return LinkPlan(link, False, f"{lockfile} differs between the worktree and the checkout")
    if (source / "pyvenv.cfg").is_file():
        why = editable_install_into(source, checkout)
        if why is not None:
            return LinkPlan(link, False, f"{link.path} holds an editable install of the checkout ({why})")
    return LinkPlan(link, True, "linked" + (f" ({', '.join(link.lockfiles)} unchanged)" if link.lockfiles else ""))


def plan(
    settings: WorktreeSettings, worktree_file: Callable[[str], bytes | None], checkout: Path, salt: str = ""
) -> Plan:
    """The key and link decisions for a worktree whose files ``worktree_file`` reads (``salt``:
    anything else the caller wants the key to depend on)."""
    links = [link_plan(link, worktree_file, checkout) for link in settings.link]
    inputs = sorted({*settings.inputs, *(f for link in settings.link for f in link.lockfiles)})
    material = {
        "settings": settings.fingerprint(),
        "inputs": {name: _bytes_digest(worktree_file(name)) for name in inputs},
        "links": {p.link.path: p.safe for p in links},
        "salt": salt,
    }
    return Plan(hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest(), links)


def _bytes_digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def disk_reader(root: Path) -> Callable[[str], bytes | None]:
    def read(name: str) -> bytes | None:
        try:
            return (root / name).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    return read


def commit_reader(repo: GitRepo, sha: str) -> Callable[[str], bytes | None]:
    return lambda name: repo.show(sha, name)


def copy_sources(settings: WorktreeSettings, checkout: Path) -> list[str]:
    """The checkout's untracked or ignored files matching the copy globs, relative, sorted.

    Each glob is walked from its fixed prefix (``src/pkg/_version.py`` reads one file; a glob
    without ``**`` is not walked deeper than it has segments); ``.git`` is never entered."""
    found: set[str] = set()
    for glob in settings.copy_globs:
        prefix = literal_prefix(glob)
        start = prefix if "*" not in glob and "?" not in glob and "[" not in glob else prefix.rpartition("/")[0]
        depth = None if "**" in glob or start == glob else glob.count("/") + 1
        for path in _walk(checkout, start, depth):
            if matches_any(path, [glob]):
                found.add(path)
    tracked = _tracked(checkout, sorted(found)) if found else set()
    return sorted(found - tracked)


def _walk(root: Path, start: str, depth: int | None) -> Iterator[str]:
    base = root / start if start else root
    if base.is_symlink() or base.is_file():
        yield start
        return
    if not base.is_dir():
        return
    for folder, dirs, files in os.walk(base, followlinks=False):
        rel = Path(folder).relative_to(root).as_posix()
        level = 0 if rel == "." else rel.count("/") + 1
        prefix = "" if rel == "." else f"{rel}/"
        links = [d for d in dirs if (Path(folder) / d).is_symlink()]
        dirs[:] = [d for d in dirs if d != ".git" and d not in links and (depth is None or level + 1 < depth)]
        for name in [*files, *links]:
            yield prefix + name


# --- doing ---------------------------------------------------------------------------------


def marker_path(worktree: GitRepo) -> Path:
    return worktree.git_dir / MARKER


def marked_key(worktree: GitRepo) -> str | None:
    try:
        return str(json.loads(marker_path(worktree).read_text(encoding="utf-8"))["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_marker(worktree: GitRepo, key: str, kept: list[str]) -> None:
    target = marker_path(worktree)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps({"key": key, "kept": kept, "at": time.time()}), encoding="utf-8")
    partial.replace(target)


def kept_entries(worktree: GitRepo) -> list[str] | None:
    try:
        kept = json.loads(marker_path(worktree).read_text(encoding="utf-8"))["kept"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(k) for k in kept]


def exclude_pattern(entry: str) -> str:
    """An anchored info/exclude line matching exactly ``entry`` (a directory keeps its '/')."""
    escaped = "".join("\\" + c if c in "*?[\\!#" else c for c in entry)
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return "/" + escaped


class _Log:
    """One log for the whole bootstrap: each step's argv, then what it printed."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.path = folder / "bootstrap.log"
        self.path.write_text("", encoding="utf-8")
        self.count = 0

    def note(self, text: str) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(text.rstrip("\n") + "\n")

    def step_files(self) -> tuple[Path, Path]:
        self.count += 1
        return self.folder / f"step{self.count}.stdout.log", self.folder / f"step{self.count}.stderr.log"

    def absorb(self, result: ProcessResult) -> None:
        with self.path.open("ab") as out:
            for name, part in (("stdout", result.stdout_path), ("stderr", result.stderr_path)):
                data = part.read_bytes() if part.is_file() else b""
                if data:
                    out.write(f"[{name}]\n".encode() + data + (b"" if data.endswith(b"\n") else b"\n"))
                part.unlink(missing_ok=True)
        verdict = "timed out" if result.timed_out else f"exit {result.exit_code}"
        self.note(f"[{verdict} after {result.duration_s:.1f} s]")

    def tail(self) -> str:
        size = self.path.stat().st_size
        with self.path.open("rb") as handle:
            handle.seek(max(0, size - _TAIL_BYTES))
            text = handle.read().decode("utf-8", "replace")
        return ("…" if size > _TAIL_BYTES else "") + text


def bootstrap(
    *,
    worktree: Path,
    checkout: Path,
    settings: WorktreeSettings,
    env: Callable[[], dict[str, str]],
    log_dir: Path,
    on_tick: Callable[[float], None] | None = None,
    force: bool = False,
    salt: str = "",
) -> Outcome:
    """Make ``worktree`` ready by ``settings``, unless its marker already has the current key.

    ``env`` gives the environment for a step (called before each, so a ``.venv`` a step made is on
    PATH for the next).

    Raises:
        BootstrapFailed: a copy, link or step failed (the step named, the log's tail in the
            message); nothing is marked done.
    """
    repo = GitRepo(worktree)
    planned = plan(settings, disk_reader(worktree), checkout, salt)
    if not force and marked_key(repo) == planned.key:
        return Outcome(False, planned.key)
    marker_path(repo).unlink(missing_ok=True)
    started = time.monotonic()
    deadline = started + settings.timeout_s
    log = _Log(log_dir)
    outcome = Outcome(True, planned.key, log.path)
    before, changed_before = _untracked(repo), tracked_changes(repo)
    chain = toolchain_for(worktree, checkout)
    log.note(f"# bootstrap of {worktree} (checkout {checkout})\n# {chain.describe()}")

    copied = _copy(settings, checkout, worktree, log)
    if copied:
        outcome.done.append(f"copied {len(copied)} file(s)")
    for item in planned.links:
        _link(item, checkout, worktree, log, outcome, deadline, env, on_tick)
    for index, step in enumerate(settings.setup, start=1):
        name = f"setup step {index} of {len(settings.setup)} ({command_text([step])})"
        _run_step(name, step, worktree, log, deadline, env, on_tick)
    if settings.setup:
        outcome.done.append(f"{len(settings.setup)} setup step(s)")

    changed = sorted(tracked_changes(repo) - changed_before)
    if changed:
        raise BootstrapFailed(
            f"worktree bootstrap changed files git tracks: {', '.join(changed[:5])}; a setup step must leave the "
            "committed files as they are (use `npm ci` rather than `npm install`, `uv sync --locked`, "
            "`poetry install` with its lock file), or the change would be committed with the task",
            log.path,
            step="after the setup steps",
        )
    made = sorted(_untracked(repo) - before)
    if made:
        repo.exclude(EXCLUDE_HEADER)
        for entry in made:
            repo.exclude(exclude_pattern(entry))
        log.note("# added to .git/info/exclude: " + ", ".join(made))
    outcome.kept = leftovers(repo)
    outcome.duration_s = time.monotonic() - started
    _write_marker(repo, planned.key, outcome.kept)
    log.note(f"# done in {outcome.duration_s:.1f} s")
    return outcome


def _copy(settings: WorktreeSettings, checkout: Path, worktree: Path, log: _Log) -> list[str]:
    sources = copy_sources(settings, checkout)
    if settings.copy_globs and not sources:
        log.note(f"# copy: nothing in the checkout matches {', '.join(settings.copy_globs)} (untracked or ignored)")
    tracked_here = _tracked(worktree, sources) if sources else set()
    copied = []
    for rel in sources:
        target = worktree / rel
        if rel in tracked_here or target.exists() or target.is_symlink():
            log.note(f"# copy: kept the worktree's {rel}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(checkout / rel, target, follow_symlinks=False)
        except OSError as exc:
            raise BootstrapFailed(f"worktree bootstrap could not copy {rel} from {checkout}: {exc}", log.path) from exc
        copied.append(rel)
    if copied:
        log.note("# copied from the checkout: " + ", ".join(copied))
    return copied


def _link(
    item: LinkPlan,
    checkout: Path,
    worktree: Path,
    log: _Log,
    outcome: Outcome,
    deadline: float,
    env: Callable[[], dict[str, str]],
    on_tick: Callable[[float], None] | None,
) -> None:
    link = item.link
    target, source = worktree / link.path, checkout / link.path
    if _tracked(checkout, [link.path]) or _tracked(worktree, [link.path]):
        raise BootstrapFailed(
            f"link {link.path!r}: git tracks files there, so it is part of the code, not something to share; "
            "remove it from [worktree] link",
            log.path,
        )
    if item.safe:
        if target.is_symlink() and target.readlink() == source:
            log.note(f"# link {link.path}: already linked")
            return
        if target.exists() or target.is_symlink():
            log.note(f"# link {link.path}: the worktree already has its own; kept")
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source, target_is_directory=source.is_dir())
        log.note(f"# link {link.path} -> {source}: {item.why}")
        outcome.done.append(f"linked {link.path}")
        return
    if target.is_symlink():
        target.unlink()  # an earlier link that is no longer safe: never delete through it
        log.note(f"# link {link.path}: removed the earlier link ({item.why})")
    if not link.fallback:
        raise BootstrapFailed(
            f"worktree bootstrap: {link.path} cannot be linked from the checkout: {item.why}; give the link "
            f'fallback steps that make it (e.g. fallback = [["npm", "ci"]]), or bring the checkout in line',
            log.path,
            step=f"link {link.path}",
        )
    log.note(f"# link {link.path}: not linked ({item.why}); running its fallback")
    for index, step in enumerate(link.fallback, start=1):
        name = f"link {link.path} fallback step {index} of {len(link.fallback)} ({command_text([step])})"
        _run_step(name, step, worktree, log, deadline, env, on_tick)
    outcome.done.append(f"{link.path} made by its fallback ({item.why})")


def _run_step(
    name: str,
    argv: list[str],
    worktree: Path,
    log: _Log,
    deadline: float,
    env: Callable[[], dict[str, str]],
    on_tick: Callable[[float], None] | None,
) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise BootstrapFailed(
            f"worktree bootstrap ran out of time before {name}; raise [worktree] timeout_s\n{log.tail()}",
            log.path,
            step=name,
        )
    log.note(f"$ {command_text([argv])}")
    stdout, stderr = log.step_files()
    try:
        result = run_process(
            argv,
            cwd=worktree,
            timeout_s=remaining,
            env=env(),
            stdout_path=stdout,
            stderr_path=stderr,
            on_tick=on_tick,
        )
    except ExecutionError as exc:
        log.note(f"[could not start: {exc}]")
        raise BootstrapFailed(f"worktree bootstrap failed at {name}: {exc}", log.path, step=name) from exc
    log.absorb(result)
    if result.timed_out:
        raise BootstrapFailed(
            f"worktree bootstrap failed at {name}: timed out ([worktree] timeout_s); the log ends:\n{log.tail()}",
            log.path,
            step=name,
        )
    if result.exit_code != 0:
        raise BootstrapFailed(
            f"worktree bootstrap failed at {name}: exit {result.exit_code}; the log ends:\n{log.tail()}",
            log.path,
            step=name,
        )


def restore(worktree: GitRepo, kept: list[str]) -> None:
    """Bring a reused scratch worktree back to its commit plus what its bootstrap left: tracked
    files reset, every other untracked or ignored file removed.

    Raises:
        GitError: git could not reset or clean it (the caller makes a new one).
    """
    worktree.git("reset", "--quiet", "--hard", "HEAD")
    excludes = [arg for entry in kept for arg in ("-e", exclude_pattern(entry.rstrip("/")))]
    worktree.git("clean", "-ffdxq", *excludes)
    missing = [entry for entry in kept if not (worktree.root / entry.rstrip("/")).exists()]
    if missing:
        raise GitError(f"the reused worktree {worktree.root} lost {', '.join(missing[:3])}; it is made again")


def tracked_changes(worktree: GitRepo) -> set[str]:
    """Tracked files that differ from the worktree's commit."""
    out = worktree.git("status", "--porcelain=v1", "-z", "--untracked-files=no")
    return {e[3:] for e in out.split("\0") if len(e) > 3}


def record(
    env: Env,
    *,
    actor: str,
    run: str,
    task: str | None,
    where: str,
    worktree: Path,
    outcome: Outcome | None = None,
    failure: BootstrapFailed | None = None,
) -> ArtifactLine | None:
    """Keep a bootstrap's log as an artifact and record what happened (``worktree.bootstrapped``
    or ``worktree.bootstrap_failed``) in one transaction."""
    log = outcome.log if outcome is not None else failure.log if failure is not None else None
    with env.write(actor=actor) as w:
        artifact = None
        if log is not None and log.is_file():
            artifact = store_artifact(w, env, run=run, task=task, owner=f"bootstrap:{where}", source=log)
        logs = {artifact.name: artifact.sha256} if artifact else {}
        if failure is not None:
            w.event(
                "worktree.bootstrap_failed",
                run=run,
                task=task,
                where=where,
                worktree=str(worktree),
                step=failure.step,
                error=str(failure)[:2000],
                artifacts=logs,
            )
        elif outcome is not None:
            w.event(
                "worktree.bootstrapped",
                run=run,
                task=task,
                where=where,
                worktree=str(worktree),
                key=outcome.key,
                duration_ms=int(outcome.duration_s * 1000),
                done=outcome.done,
                artifacts=logs,
            )
    return artifact
