"""Human approval of a run: the statement a human approves, its signature, its tag, and checking them.

Two modes, chosen by ``[approval] mode`` in the policy committed at the run's base:

- ``interactive``: the human says yes at a terminal (``planegate approve``, reading /dev/tty) or in
  their MCP client (elicitation). The statement is recorded unsigned. This stops an agent that
  cannot reach the human's terminal or client (a sandboxed one); an agent with an unsandboxed
  shell can fake a terminal or speak MCP itself.
- ``signed``: ``planegate approve`` signs the statement with the human's SSH key (``ssh-keygen -Y
  sign -n planegate``) and tags the integration head ``planegate/<run>/approved`` with an
  SSH-signed tag carrying it. An approval counts only when its signature verifies against the
  allowed-signers file **as committed at the run's base** and its statement names this run, the
  current integration head and requirements version, and a ledger event that still has the hash
  it had when signed (a ledger rebuilt from scratch no longer matches what was signed).

The statement is plain ``key: value`` lines, so the tag reads well in ``git tag -v``. Checking a
signed approval runs ssh-keygen; results are cached by the exact bytes checked (statement,
signature, allowed-signers file), and the ledger anchor is looked up on every check.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from planegate.store import now_iso

from ..env import Env
from ..errors import GitError, InvalidInput, PlanegateError
from ..gitrepo import GitRepo
from ..policy import Policy
from . import signing

HEADER = "planegate approval v1"
FIELDS = (
    "run",
    "base",
    "integration-branch",
    "integration-head",
    "requirements-version",
    "ledger-chain-head",
    "approved-at",
)
_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
_CHAIN = re.compile(r"(\d{1,18}) ([0-9a-f]{64})")
_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
MAX_STATEMENT = 4_000

Mode = Literal["interactive", "signed"]


@dataclass(frozen=True)
class Statement:
    """What a human approves: this run, at this integration head, with this ledger behind it."""

    run: str
    base: str
    integration_branch: str
    integration_head: str
    requirements_version: int
    chain_event: int
    chain_hash: str
    approved_at: str

    def text(self) -> str:
        values = (
            self.run,
            self.base,
            self.integration_branch,
            self.integration_head,
            str(self.requirements_version),
            f"{self.chain_event} {self.chain_hash}",
            self.approved_at,
        )
        return HEADER + "\n" + "".join(f"{key}: {value}\n" for key, value in zip(FIELDS, values, strict=True))

    @classmethod
    def parse(cls, text: str) -> Statement:
        """Read a statement back, strictly (the exact lines ``text()`` writes).

        Raises:
            InvalidInput: naming the first line that is not as written.
        """
        if len(text) > MAX_STATEMENT:
            raise InvalidInput(f"the approval statement is {len(text)} characters; planegate writes under 1,000")
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        if len(lines) != len(FIELDS) + 1 or lines[0] != HEADER:
            raise InvalidInput(f"not a planegate approval statement (expected {HEADER!r} and {len(FIELDS)} fields)")
        values: dict[str, str] = {}
        for key, line in zip(FIELDS, lines[1:], strict=True):
            prefix = f"{key}: "
            if not line.startswith(prefix):
                raise InvalidInput(f"approval statement line {line[:60]!r} should start with {prefix!r}")
            values[key] = line[len(prefix) :]
        chain = _CHAIN.fullmatch(values["ledger-chain-head"])
        version = values["requirements-version"]
        if (
            chain is None
            or not version.isdigit()
            or not _SHA.fullmatch(values["base"])
            or not _SHA.fullmatch(values["integration-head"])
            or not _AT.fullmatch(values["approved-at"])
        ):
            raise InvalidInput("the approval statement has a malformed sha, version, chain head or time")
        return cls(
            run=values["run"],
            base=values["base"],
            integration_branch=values["integration-branch"],
            integration_head=values["integration-head"],
            requirements_version=int(version),
            chain_event=int(chain.group(1)),
            chain_hash=chain.group(2),
            approved_at=values["approved-at"],
        )


def chain_head(env: Env) -> tuple[int, str]:
    """The ledger's newest event (id, hash); (0, genesis) on an empty ledger."""
    from planegate.store import GENESIS

    row = env.store.one("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1")
    return (int(row["id"]), str(row["hash"])) if row else (0, GENESIS)


def statement_for(env: Env, run_row: dict[str, Any], head: str) -> Statement:
    event, digest = chain_head(env)
    return Statement(
        run=run_row["id"],
        base=run_row["base_sha"],
        integration_branch=run_row["integration_branch"],
        integration_head=head,
        requirements_version=int(run_row["requirements_version"]),
        chain_event=event,
        chain_hash=digest,
        approved_at=now_iso(),
    )


def tag_name(run: str) -> str:
    return f"planegate/{run}/approved"


# -- the allowed signers, from the base commit --------------------------------------------------


_cache_lock = threading.Lock()
_verified: OrderedDict[str, str] = OrderedDict()
_committed: OrderedDict[tuple[str, str, str], bytes | None] = OrderedDict()


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    with _cache_lock:
        cache[key] = value
        while len(cache) > 256:
            cache.popitem(last=False)


def allowed_signers_at_base(repo: GitRepo, run_row: dict[str, Any], policy: Policy) -> bytes:
    """The allowed-signers file as committed at the run's base; the working tree is never read.

    Raises:
        InvalidInput: the base commit has no such file.
    """
    path = policy.approval.allowed_signers
    key = (str(repo.root), run_row["base_sha"], path)
    with _cache_lock:
        known = key in _committed
        content = _committed.get(key)
    if not known:
        content = repo.show(run_row["base_sha"], path)
        _remember(_committed, key, content)
    if content is None:
        raise InvalidInput(
            f"the policy asks for signed approval but {path!r} is not in the run's base commit "
            f"{run_row['base_sha'][:12]}; add your key there (`planegate init` writes it), commit it, "
            "and start a new run from that commit"
        )
    return content


def signer_of(allowed: bytes, statement: str, signature: str) -> str:
    """The allowed signer whose key signed ``statement`` (namespace ``planegate``).

    Raises:
        InvalidInput: no allowed signer's key made the signature, or it does not verify.
    """
    key = hashlib.sha256(b"\0".join((allowed, statement.encode(), signature.encode()))).hexdigest()
    with _cache_lock:
        if key in _verified:
            return _verified[key]
    principals = signing.find_principals(allowed, signature)
    if not principals:
        raise InvalidInput("the signature was made by a key that is not in the allowed signers at the run's base")
    problems = []
    for principal in principals:
        try:
            signing.verify(allowed, principal, signature, statement.encode())
        except InvalidInput as exc:
            problems.append(str(exc))
            continue
        _remember(_verified, key, principal)
        return principal
    raise InvalidInput("; ".join(problems))


# -- checking a recorded approval ------------------------------------------------------------


def statement_problem(env: Env, run_row: dict[str, Any], row: dict[str, Any]) -> tuple[Statement | None, str | None]:
    """The statement of an approval row and what is wrong with it as a record (None: nothing).

    Checks what does not change with time: the statement parses, names this run, its base and
    integration branch, the head the row claims; and its ledger anchor still has its hash.
    """
    if not row.get("statement"):
        return None, "it carries no statement"
    try:
        statement = Statement.parse(row["statement"])
    except InvalidInput as exc:
        return None, str(exc)
    if statement.run != run_row["id"]:
        return statement, f"its statement is for run {statement.run!r}"
    if statement.base != run_row["base_sha"] or statement.integration_branch != run_row["integration_branch"]:
        return statement, "its statement names another base or integration branch"
    if statement.integration_head != row["head_sha"]:
        return (
            statement,
            f"its statement approves {statement.integration_head[:12]}, not the recorded {row['head_sha'][:12]}",
        )
    anchored = env.store.scalar("SELECT hash FROM events WHERE id = ?", (statement.chain_event,))
    if statement.chain_event and anchored != statement.chain_hash:
        return statement, (
            f"its ledger anchor (event {statement.chain_event}, {statement.chain_hash[:12]}…) is not in this ledger; "
            "the ledger was rewritten after the approval"
        )
    return statement, None


def signed_problem(env: Env, run_row: dict[str, Any], policy: Policy, row: dict[str, Any]) -> str | None:
    """Why a signed approval row does not hold as a record (None: it holds), head aside."""
    if row.get("mode") != "signed" or not row.get("signature"):
        return "it is not signed"
    _, problem = statement_problem(env, run_row, row)
    if problem:
        return problem
    try:
        allowed = allowed_signers_at_base(env.repo(run_row["repo"]), run_row, policy)
        principal = signer_of(allowed, row["statement"], row["signature"])
    except PlanegateError as exc:
        return str(exc)
    if principal != row.get("principal"):
        return f"it was signed by {principal!r}, but the ledger says {row.get('principal')!r}"
    return None


def check_approvals(
    env: Env, run_row: dict[str, Any], approvals: list[dict[str, Any]], head: str | None
) -> list[dict[str, Any]]:
    """``approvals`` with ``problem`` set on each: why it cannot count now (None when it can).

    Only approvals of ``head`` are checked (others approve another head). In signed mode an
    approval counts only when signed and valid; a signed one must be valid in interactive mode
    too (a bad signature is never trusted). Any approval made before the requirements were last
    amended no longer counts.
    """
    policy = env.policy(run_row)
    checked = []
    for row in approvals:
        mode = row.get("mode") or "interactive"
        problem: str | None
        if row["head_sha"] != head:
            problem = "it approves another integration head"
        elif mode == "signed":
            problem = signed_problem(env, run_row, policy, row)
        elif policy.approval.mode == "signed":
            problem = "it is not signed, and this run's policy asks for a signed approval"
        else:
            problem = None
        if problem is None and row.get("statement"):
            try:
                version = Statement.parse(row["statement"]).requirements_version
            except InvalidInput as exc:
                version, problem = -1, str(exc)
            if problem is None and version != run_row["requirements_version"]:
                problem = (
                    f"it approved requirements version {version}; they were amended since "
                    f"(now version {run_row['requirements_version']})"
                )
        checked.append({**row, "mode": mode, "problem": problem})
    return checked


def verify_signed_approvals(env: Env) -> tuple[int, list[str]]:
    """Re-check every signed approval in the ledger, as ``planegate ledger verify`` does.

    Each must still verify against the allowed signers at its run's base, name its run and the
    head recorded for it, and be anchored in an event that still has the hash it signed. Returns
    how many were re-verified and one line per problem (table, id and what is wrong).
    """
    problems: list[str] = []
    verified = 0
    runs: dict[str, dict[str, Any] | None] = {}
    for row in env.store.rows("SELECT * FROM approvals WHERE mode = 'signed' ORDER BY id"):
        run = row["run_id"]
        if run not in runs:
            runs[run] = env.store.one("SELECT * FROM runs WHERE id = ?", (run,))
        run_row = runs[run]
        if run_row is None:
            problems.append(f"approvals {row['id']}: run {run!r} is not in the ledger")
            continue
        try:
            problem = signed_problem(env, run_row, env.policy(run_row), row)
        except PlanegateError as exc:  # the repository moved or is gone: say so, do not guess
            problem = f"cannot be re-verified: {exc}"
        if problem:
            problems.append(f"approvals {row['id']} (run {run}, signed approval): {problem}")
        else:
            verified += 1
    return verified, problems


# -- the signed tag -----------------------------------------------------------------------------


def create_tag(repo: GitRepo, run: str, head: str, statement: str, key: signing.SigningKey) -> str:
    """Tag ``head`` as ``planegate/<run>/approved`` with an SSH-signed annotated tag carrying ``statement``.

    git signs it (``gpg.format = ssh``) with the same key; an earlier approval's tag is replaced.

    Raises:
        GitError: git could not sign or write the tag.
    """
    name = tag_name(run)
    program = ("-c", f"gpg.ssh.program={key.program}") if key.program else ()
    try:
        repo.git(
            *program,
            "-c",
            "gpg.format=ssh",
            "-c",
            f"user.signingkey={key.spec if key.path is None else key.path}",
            "tag",
            "-s",
            "-f",
            "--cleanup=verbatim",
            "-m",
            statement,
            name,
            head,
            env=repo.identity_env(),
        )
    except GitError as exc:
        raise GitError(f"{exc}\ngit could not sign the tag {name!r}; the approval was not recorded") from exc
    return name


def remove_tag(repo: GitRepo, name: str) -> None:
    """Delete tag ``name`` if it exists (compare-and-set on the tag object read just before)."""
    sha = repo.git("rev-parse", "--verify", "--quiet", f"refs/tags/{name}", ok_codes=(0, 1)).strip()
    if sha:
        repo.delete_ref(f"refs/tags/{name}", sha)
