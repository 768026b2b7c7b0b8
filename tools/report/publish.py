"""Publishing an accepted run: its integration branch pushed, and a draft pull request opened.

``publish_run`` pushes the accepted integration head (the commit ``accept_run`` recorded, not
whatever the branch points at later) to the policy's ``[publish] remote`` under ``[publish]
branch`` (default: the integration branch's own name), without force. It refuses to push to the
remote's default branch or to the pull request's base: a run's work reaches those only through a
reviewed pull request. The pull request is opened as a **draft** with ``gh pr create --draft``
when ``gh`` is on PATH and ``gh auth status`` succeeds; otherwise the answer lists the exact
commands to open it by hand. A pull request already open for the branch is found, not duplicated.

The body is the run's report (``report.md``). GitHub refuses bodies over 65,536 characters, so a
longer report is cut at a section boundary and ends with a note naming the full report, which
stays an artifact (path and sha256). The body is kept as an artifact too, and the publication is
an event of the run (remote, branch, commit, pull request).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from ..control.artifacts import store_artifact
from ..env import Env
from ..errors import ExecutionError, GitError, InvalidInput, WrongState
from ..gitrepo import GitRepo
from ..models import PublishResult
from .remote import publish_remote_url
from .report import write_report

BODY_LIMIT = 65_536
GH_TIMEOUT_S = 120.0
_GITHUB_URL = re.compile(r"^(?:https?://|ssh://git@|git@)([^/:]+)[/:]([^/]+)/([^/]+?)(?:\.git)?/?$")


def _default_branch(repo: GitRepo, remote: str) -> str | None:
    """The remote's default branch (its HEAD), or None when it cannot be told."""
    try:
        out = repo.git("ls-remote", "--symref", "--", remote, "HEAD", env=_quiet_env())
    except GitError:
        return None
    for line in out.splitlines():
        if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
            return line[len("ref: refs/heads/") : -len("\tHEAD")]
    # A remote whose HEAD names an unborn branch says nothing; a clone remembers it locally.
    status, local, _ = repo._run(("symbolic-ref", "--quiet", f"refs/remotes/{remote}/HEAD"))
    prefix = f"refs/remotes/{remote}/"
    return local.strip()[len(prefix) :] if status == 0 and local.strip().startswith(prefix) else None


def _quiet_env() -> dict[str, str]:
    """The user's environment (their credentials push), but never a prompt that would hang a tool."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GH_PROMPT_DISABLED": "1", "NO_COLOR": "1"}
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


def pr_body(report: str, full_path: Path, sha256: str, limit: int = BODY_LIMIT) -> tuple[str, bool]:
    """The report as a pull-request body of at most ``limit`` characters, and whether it was cut.

    A cut keeps whole ``## `` sections from the top and ends with a note naming the full report.
    """
    if len(report) <= limit:
        return report, False
    note = (
        f"\n\n---\n\n*This report is cut to fit a pull-request body ({len(report):,} characters; GitHub takes "
        f"{limit:,}). The full report is the artifact `{full_path}` (sha256 `{sha256}`).*\n"
    )
    room = limit - len(note)
    sections = re.split(r"(?m)^(?=## )", report)
    kept = ""
    for section in sections:
        if len(kept) + len(section) > room:
            break
        kept += section
    if not kept:  # one section longer than the whole room: cut at a line
        kept = report[:room]
        kept = kept[: kept.rfind("\n") + 1] or kept
    return kept.rstrip() + note, True


def _accepted_sha(env: Env, run: str) -> str:
    row = env.store.one(
        "SELECT payload FROM events WHERE run_id = ? AND kind = 'run.accepted' ORDER BY id DESC LIMIT 1", (run,)
    )
    sha = json.loads(row["payload"]).get("integration_sha") if row else None
    if not sha:
        raise WrongState(f"run {run!r} has no acceptance record with its integration head; it cannot be published")
    return str(sha)


def _push(repo: GitRepo, remote: str, sha: str, branch: str) -> bool:
    """Push ``sha`` to ``branch`` on ``remote`` without force; True when the remote moved."""
    try:
        out = repo.git("push", "--porcelain", "--", remote, f"{sha}:refs/heads/{branch}", env=_quiet_env())
    except GitError as exc:
        raise GitError(
            f"pushing {sha[:12]} to {remote} {branch} was refused: {exc}. If the remote branch holds other "
            f"commits, set [publish] branch to another name (never force over someone's work)"
        ) from exc
    flags = [line.split("\t", 1)[0] for line in out.splitlines() if "\t" in line]
    return any(flag in ("*", " ", "+") for flag in flags)


def _gh(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            cwd=cwd,
            env=_quiet_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GH_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExecutionError(f"{argv[0]} {' '.join(argv[1:3])} could not run: {exc}") from exc


def publish_run(env: Env, run: str) -> PublishResult:
    """Push an accepted run's integration head and open a draft pull request (or say how to).

    Raises:
        WrongState: the run is not accepted.
        InvalidInput: the remote is missing, or the branch pushed would be the default branch or the base.
        GitError: the push was refused.
    """
    run_row = env.run_row(run)
    if run_row["stage"] != "accepted":
        raise WrongState(
            f"run {run!r} is {run_row['stage']}; only an accepted run is published: get_status({run!r}) names "
            "what it still needs"
        )
    settings = env.policy(run_row).publish
    repo = env.repo(run_row["repo"])
    remote = settings.remote
    url = publish_remote_url(repo, remote)
    if url is None:
        raise InvalidInput(
            f"the repository {repo.root} has no git remote {remote!r}; add it (`git remote add {remote} URL`) or "
            "name another one in the policy ([publish] remote), then publish_run again"
        )
    branch = (settings.branch or run_row["integration_branch"]).replace("{run}", run)
    default = _default_branch(repo, remote)
    base = settings.base or (
        run_row["base_ref"] if repo.branch_sha(run_row["base_ref"]) is not None else (default or "")
    )
    if not base:
        raise InvalidInput(
            f"the pull request's base branch cannot be told: the run started from {run_row['base_ref']!r} (not a "
            f"branch) and {remote} names no default branch; set [publish] base in the policy"
        )
    for forbidden, why in ((default, f"the default branch of {remote}"), (base, "the pull request's base")):
        if forbidden and branch == forbidden:
            raise InvalidInput(
                f"refusing to push run {run!r} to {branch!r}, {why}: a run reaches it only through a reviewed "
                "pull request; set [publish] branch to another name (default: the integration branch)"
            )
    sha = _accepted_sha(env, run)
    pushed = _push(repo, remote, sha, branch)
    folder = env.settings.artifacts / run / "report"
    full = folder / "report.md"
    if not full.is_file():
        full = write_report(env, run, folder).markdown
    report = full.read_text(encoding="utf-8")
    body, truncated = pr_body(report, full, hashlib.sha256(report.encode()).hexdigest())
    body_path = folder / "pr-body.md"
    body_path.write_text(body, encoding="utf-8")
    title = " ".join(run_row["goal"].split())[:200]
    repo_arg = _gh_repo(url)
    create = [
        "gh", "pr", "create", "--draft", *repo_arg, "--base", base, "--head", branch,
        "--title", title, "--body-file", str(body_path),
    ]  # fmt: skip
    commands: list[str] = []
    pull_request: str | None = None
    gh = shutil.which("gh", path=os.environ.get("PATH"))
    why_not = "gh is not installed"
    if gh is not None:
        status = _gh([gh, "auth", "status"], repo.root)
        if status.returncode == 0:
            pull_request, why_not = _open_draft(gh, create, branch, repo_arg, repo.root)
        else:
            why_not = "gh is not logged in"
            commands.append("gh auth login")
    if pull_request is None:
        commands.append(shlex.join(create))
    with env.write() as w:
        store_artifact(w, env, run=run, task=None, owner="publish", source=body_path)
        w.event(
            "run.published",
            run=run,
            remote=remote,
            url=url,
            branch=branch,
            base=base,
            sha=sha,
            pushed=pushed,
            pull_request=pull_request,
            truncated=truncated,
        )
    next_step = (
        f"done: a human reviews the draft pull request {pull_request} and marks it ready"
        if pull_request
        else f"human or shell: {why_not}; the branch is pushed. In {repo.root} run: {' && '.join(commands)}"
    )
    return PublishResult(
        run=run,
        branch=branch,
        base=base,
        sha=sha,
        pushed=pushed,
        pull_request=pull_request,
        body=str(body_path),
        truncated=truncated,
        commands=commands,
        next_step=next_step,
    )


def _gh_repo(url: str) -> list[str]:
    """``--repo HOST/OWNER/NAME`` for a remote URL gh can name, so gh never has to guess or ask."""
    found = _GITHUB_URL.match(url)
    return ["--repo", f"{found.group(1)}/{found.group(2)}/{found.group(3)}"] if found else []


def _open_draft(gh: str, create: list[str], branch: str, repo_arg: list[str], cwd: Path) -> tuple[str | None, str]:
    """Open the draft pull request, or find the one already open for ``branch``: its URL, or why not."""
    done = _gh([gh, *create[1:]], cwd)
    if done.returncode == 0:
        urls = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("http")]
        if urls:
            return urls[-1], ""
    if "already exists" in done.stderr:
        found = _gh([gh, "pr", "view", branch, *repo_arg, "--json", "url", "--jq", ".url"], cwd)
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.strip(), ""
    problem = " ".join((done.stderr or done.stdout).split())[:600]
    return None, f"gh pr create failed (exit {done.returncode}): {problem}"
