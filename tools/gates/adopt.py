"""A run's policy adopted again, by a human: the only way to change a run's gates after it started.

A run holds the policy committed at its base for its whole life, so nothing a task does can
loosen its own gates. When the policy was wrong (a check command that cannot work, a budget too
small), ``planegate policy adopt RUN [--at REF]`` lets a human adopt the policy committed at REF
(default: the repository's HEAD): it shows what changes key by key, asks for the run id at the
terminal, and records who adopted it. When the run's current policy asks for signed approval, the
adoption is signed like an approval (``ssh-keygen -Y sign -n planegate`` over a statement naming
the run, both policies' sha256 and the ledger's chain head), checked against the allowed signers
committed at the run's base. No MCP tool adopts a policy.

Every adoption is a vouched ``policy_adoptions`` row holding the policy it replaced. They form a
chain the gates check (``adoption_problems``): the first replaces the policy ``run.started``
recorded, each next one the one before, the last is the run's policy now, and each adoption made
while the policy asked for signatures carries a valid one. A policy changed any other way — even
through planegate's own code, without the human's key — makes the ledger gate refuse.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from typing import Any

from planegate.store import canonical_json, now_iso

from ..control.runs import policy_at
from ..env import Env
from ..errors import Conflict, InvalidInput, PlanegateError, WrongState
from ..policy import Policy
from . import approval, signing

HEADER = "planegate policy adoption v1"
FIELDS = ("run", "base", "previous-policy-sha256", "policy-sha256", "source", "ledger-chain-head", "adopted-at")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def policy_changes(before: Policy, after: Policy) -> list[str]:
    """What differs between two policies, one ``key: old -> new`` line per key (sorted)."""
    old, new = _flat(before.model_dump(mode="json")), _flat(after.model_dump(mode="json"))
    lines = []
    for key in sorted({*old, *new}):
        if old.get(key) != new.get(key):
            lines.append(f"{key}: {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}")
    return lines


@dataclass(frozen=True)
class AdoptionStatement:
    run: str
    base: str
    previous_sha256: str
    policy_sha256: str
    source: str
    chain_event: int
    chain_hash: str
    adopted_at: str

    def text(self) -> str:
        values = (
            self.run,
            self.base,
            self.previous_sha256,
            self.policy_sha256,
            self.source,
            f"{self.chain_event} {self.chain_hash}",
            self.adopted_at,
        )
        return HEADER + "\n" + "".join(f"{key}: {value}\n" for key, value in zip(FIELDS, values, strict=True))

    @classmethod
    def parse(cls, text: str) -> AdoptionStatement:
        """Raises InvalidInput when ``text`` is not exactly what ``text()`` writes."""
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(text) > 4000 or len(lines) != len(FIELDS) + 1 or lines[0] != HEADER:
            raise InvalidInput(f"not a planegate policy adoption statement ({HEADER!r} and {len(FIELDS)} fields)")
        values = {}
        for key, line in zip(FIELDS, lines[1:], strict=True):
            if not line.startswith(f"{key}: "):
                raise InvalidInput(f"policy adoption statement line {line[:60]!r} should start with {key + ': '!r}")
            values[key] = line[len(key) + 2 :]
        event, _, digest = values["ledger-chain-head"].partition(" ")
        if not event.isdigit() or not _SHA256.fullmatch(values["policy-sha256"]):
            raise InvalidInput("the policy adoption statement has a malformed chain head or sha256")
        return cls(
            run=values["run"],
            base=values["base"],
            previous_sha256=values["previous-policy-sha256"],
            policy_sha256=values["policy-sha256"],
            source=values["source"],
            chain_event=int(event),
            chain_hash=digest,
            adopted_at=values["adopted-at"],
        )


@dataclass(frozen=True)
class PendingAdoption:
    """What the human is shown and asked to adopt."""

    run_row: dict[str, Any]
    current: Policy
    policy: Policy
    snapshot: str
    sha256: str
    source: str
    changes: list[str]
    mode: approval.Mode  # the run's approval mode now: signed asks for a signed adoption
    statement: AdoptionStatement


def pending_adoption(env: Env, run: str, ref: str | None = None) -> PendingAdoption:
    """The policy committed at ``ref`` (default HEAD) against the run's, as a human would adopt it.

    Raises:
        WrongState: the run is accepted or abandoned, or the policies are the same.
        InvalidInput: ``ref`` is not a commit. PolicyError: the file at ``ref`` is malformed.
    """
    run_row = env.run_row(run)
    if run_row["stage"] in ("accepted", "abandoned"):
        raise WrongState(f"run {run!r} is {run_row['stage']}; its policy can no longer change")
    repo = env.repo(run_row["repo"])
    target = ref or "HEAD"
    sha = repo.rev(target)
    if sha is None:
        raise InvalidInput(f"--at {target!r} is not a commit in {repo.root}; give a branch, tag or sha")
    policy, where = policy_at(repo, sha)
    snapshot = policy.canonical()
    digest = hashlib.sha256(snapshot.encode()).hexdigest()
    if digest == run_row["policy_sha256"]:
        raise WrongState(f"run {run!r} already holds the policy committed at {target} ({sha[:12]}); nothing to adopt")
    current = env.policy(run_row)
    event, chain = approval.chain_head(env)
    return PendingAdoption(
        run_row=run_row,
        current=current,
        policy=policy,
        snapshot=snapshot,
        sha256=digest,
        source=f"{target} {sha} ({where})",
        changes=policy_changes(current, policy),
        mode=current.approval.mode,
        statement=AdoptionStatement(
            run=run,
            base=run_row["base_sha"],
            previous_sha256=run_row["policy_sha256"],
            policy_sha256=digest,
            source=f"{target} {sha}",
            chain_event=event,
            chain_hash=chain,
            adopted_at=now_iso(),
        ),
    )


def describe_adoption(pending: PendingAdoption) -> str:
    run_row = pending.run_row
    lines = [
        f"Run {run_row['id']}: {run_row['goal']}",
        f"Adopt the policy at {pending.source}",
        f"in place of the run's policy sha256:{run_row['policy_sha256'][:16]} (sha256:{pending.sha256[:16]} after).",
        "",
        "What changes (key: now -> after):",
        *[f"  {line}" for line in pending.changes],
        "",
        "The run's gates follow the adopted policy from now on; evidence and reviews already made stay bound to "
        "their commits. This is recorded with your name"
        + (" and signed with your SSH key (the run's approval mode is signed)." if pending.mode == "signed" else "."),
    ]
    return "\n".join(lines)


def adopt_policy(
    env: Env,
    pending: PendingAdoption,
    by: str,
    via: str,
    *,
    signature: str | None = None,
) -> dict[str, Any]:
    """Record the adoption: the run's policy replaced, with the adoption row and its event.

    Raises:
        WrongState: the run's policy asks for a signed adoption and none was given; the run closed.
        InvalidInput: the signature is not an allowed signer's over the statement.
        Conflict: the run's policy changed since ``pending`` was read.
    """
    run_row = pending.run_row
    run = run_row["id"]
    text = pending.statement.text()
    principal = None
    if pending.mode == "signed":
        if signature is None:
            raise WrongState(
                f'run {run!r} approves with signatures ([approval] mode = "signed"), so adopting a policy needs '
                f"one too: a human runs `planegate policy adopt {run}` with their SSH key"
            )
        allowed = approval.allowed_signers_at_base(env.repo(run_row["repo"]), run_row, pending.current)
        principal = approval.signer_of(allowed, text, signature)
    row = {
        "run_id": run,
        "by": principal or by,
        "via": via,
        "mode": "signed" if signature is not None else "interactive",
        "source": pending.source,
        "previous_sha256": run_row["policy_sha256"],
        "policy_sha256": pending.sha256,
        "previous_policy": run_row["policy"],
        "changes": canonical_json(pending.changes),
        "statement": text,
        "signature": signature,
        "principal": principal,
    }
    with env.write() as w:
        current = env.run_row(run)
        if current["stage"] in ("accepted", "abandoned"):
            raise WrongState(f"run {run!r} became {current['stage']} meanwhile; nothing was adopted")
        if not w.cas(
            "runs",
            {"id": run},
            {"policy_sha256": run_row["policy_sha256"]},
            {"policy": pending.snapshot, "policy_sha256": pending.sha256, "updated_at": w.at},
        ):
            raise Conflict(f"the policy of run {run!r} changed while you were deciding; run the command again")
        adoption = w.insert("policy_adoptions", {**row, "at": w.at})
        w.event(
            "policy.adopted",
            run=run,
            adoption=adoption,
            by=row["by"],
            via=via,
            mode=row["mode"],
            source=pending.source,
            previous_sha256=row["previous_sha256"],
            policy_sha256=pending.sha256,
            changes=pending.changes,
        )
    return {**row, "id": adoption}


def adopt_signed(
    env: Env, pending: PendingAdoption, key: signing.SigningKey, via: str, *, show_prompts: bool = False
) -> dict[str, Any]:
    """Sign the adoption statement with ``key`` and record it (see ``adopt_policy``)."""
    signature = signing.sign(key, pending.statement.text().encode(), show_prompts=show_prompts)
    return adopt_policy(env, pending, "", via, signature=signature)


def adoption_lines(env: Env, run: str) -> list[str]:
    """One line per adoption and per key it changed, for the approval and the report."""
    lines = []
    for row in env.store.rows("SELECT * FROM policy_adoptions WHERE run_id = ? ORDER BY id", (run,)):
        how = f"signed by {row['principal']}" if row["mode"] == "signed" else f"by {row['by']} via {row['via']}"
        lines.append(f"adopted {row['at']} {how}, from {row['source']}")
        lines += [f"  {change}" for change in json.loads(row["changes"])]
    return lines


def adoption_problems(env: Env, run_row: dict[str, Any]) -> list[str]:
    """Why the run's policy cannot be trusted (empty when it can): see the module docstring."""
    run = run_row["id"]
    problems: list[str] = []
    if hashlib.sha256(str(run_row["policy"]).encode()).hexdigest() != run_row["policy_sha256"]:
        problems.append(f"runs {run}: its policy does not hash to its policy_sha256")
    expected = _started_policy(env, run)
    rows = env.store.rows("SELECT * FROM policy_adoptions WHERE run_id = ? ORDER BY id", (run,))
    for row in rows:
        if expected is not None and row["previous_sha256"] != expected:
            problems.append(f"policy_adoptions {row['id']}: it replaced a policy the run never held")
        previous = _policy_of(row["previous_policy"])
        if previous is None or hashlib.sha256(row["previous_policy"].encode()).hexdigest() != row["previous_sha256"]:
            problems.append(f"policy_adoptions {row['id']}: the policy it replaced does not match its sha256")
        elif previous.approval.mode == "signed":
            problem = _signature_problem(env, run_row, previous, row)
            if problem:
                problems.append(f"policy_adoptions {row['id']} (signed adoption): {problem}")
        expected = row["policy_sha256"]
    if expected is not None and expected != run_row["policy_sha256"]:
        problems.append(
            f"runs {run}: its policy (sha256:{run_row['policy_sha256'][:16]}) was not adopted by a human "
            "(`planegate policy adopt`)"
        )
    return problems


_started_lock = threading.Lock()
_started: dict[tuple[str, str], str | None] = {}


def _started_policy(env: Env, run: str) -> str | None:
    """The policy sha256 the run's ``run.started`` event recorded (events never change: cached)."""
    key = (str(env.settings.ledger_path), run)
    with _started_lock:
        if key in _started:
            return _started[key]
    row = env.store.one(
        "SELECT payload FROM events WHERE run_id = ? AND kind = 'run.started' ORDER BY id LIMIT 1", (run,)
    )
    found = json.loads(row["payload"]).get("policy_sha256") if row else None
    if row is not None:
        with _started_lock:
            if len(_started) > 1024:
                _started.clear()
            _started[key] = found
    return found


def _policy_of(snapshot: str) -> Policy | None:
    try:
        return Policy.model_validate(json.loads(snapshot))
    except ValueError:
        return None


def _signature_problem(env: Env, run_row: dict[str, Any], policy: Policy, row: dict[str, Any]) -> str | None:
    if row["mode"] != "signed" or not row["signature"] or not row["statement"]:
        return "the policy it replaced asked for a signed adoption and it is not signed"
    try:
        statement = AdoptionStatement.parse(row["statement"])
    except InvalidInput as exc:
        return str(exc)
    if (
        statement.run != run_row["id"]
        or statement.base != run_row["base_sha"]
        or statement.previous_sha256 != row["previous_sha256"]
        or statement.policy_sha256 != row["policy_sha256"]
    ):
        return "its statement names another run, base or policy"
    anchored = env.store.scalar("SELECT hash FROM events WHERE id = ?", (statement.chain_event,))
    if statement.chain_event and anchored != statement.chain_hash:
        return "its ledger anchor is not in this ledger; the ledger was rewritten after the adoption"
    try:
        allowed = approval.allowed_signers_at_base(env.repo(run_row["repo"]), run_row, policy)
        principal = approval.signer_of(allowed, row["statement"], row["signature"])
    except PlanegateError as exc:
        return str(exc)
    if principal != row["principal"]:
        return f"it was signed by {principal!r}, but the ledger says {row['principal']!r}"
    return None
