"""Who an executor or a reviewer really is, so a model cannot review its own work.

A command's identity is the program its argv finally runs, not its first word: ``unwrap.py``
looks through wrappers (env, nice, timeout, nohup, stdbuf, ionice, ``sh -c``, ``python -m``,
npx, uvx, …) and keeps every candidate when an option's arity is unknown. ``resolve_command``
then finds each candidate on disk (PATH, or relative to the repository) and follows symlinks, so
a link to the executor's script is that script; it also hashes each program file (up to
``DIGEST_LIMIT``) so a copy is recognised. A program that cannot be told (``sh -c '$CMD'``,
``python -c``, stdin) makes the comparison refuse rather than guess.

The policy may declare the model behind an actor (``[executor] model`` for codex,
``[executor] agent_model`` for the calling agent, ``[review] model`` for the reviewer); a
``--model``/``-m``/``-c model=`` in a command counts as declared too. ``compare`` says two actors
are the same when they share a program file (real path or content), a tool name, an argv
mention of the other's tool, or a declared model; and refuses when either cannot be told.
The ``agent`` executor's tool name is the MCP client's self-chosen name, so declare
``agent_model`` to make that comparison rest on more than what the client says.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..policy import Policy
from .unwrap import models_in, unwrap

__all__ = [
    "DIGEST_LIMIT",
    "Comparison",
    "Identity",
    "agent_identity",
    "compare",
    "executor_identity",
    "legacy_identity",
    "resolve_command",
    "reviewer_identity",
    "tool_core",
]

DIGEST_LIMIT = 16 * 1024 * 1024


# --- names -----------------------------------------------------------------------------------

_EXEC_SUFFIXES = (".py", ".pyw", ".js", ".mjs", ".cjs", ".ts", ".mts", ".sh", ".bash", ".rb", ".pl", ".exe", ".cmd")
# Script names that say nothing about the tool; the folder they live in does.
_GENERIC = {"cli", "index", "main", "__main__", "run", "start", "app", "entry", "launcher", "wrapper", "bin"}
_PLAIN_DIRS = {"bin", "dist", "lib", "src", "build", "out", "scripts", "node_modules", ".bin", "libexec"}


def tool_core(name: str) -> str:
    """A tool name reduced for comparison: lower case, no extension, version or punctuation."""
    text = name.strip().lower()
    for suffix in _EXEC_SUFFIXES:
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    text = re.sub(r"(@[^/]*|==.*|\[.*\])$", "", text)  # pkg@1.2, pkg==1.2, pkg[extra]
    text = re.sub(r"[-_.]?v?\d+(\.\d+)*$", "", text) or text  # python3.11, tool-2
    return "".join(ch for ch in text if ch.isalnum())


def _tool_of_path(path: str) -> str:
    """The tool a program path names: its file name, or its folder's for generic names."""
    pure = PurePosixPath(path)
    stem = pure.name
    for suffix in _EXEC_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if stem.lower() not in _GENERIC:
        return stem
    for parent in pure.parents:
        if parent.name and parent.name.lower() not in _PLAIN_DIRS:
            return parent.name
    return stem


def _package_tool(spec: str) -> str:
    """``@scope/name@1.2`` → ``name``; ``name==1.0``/``name[extra]`` → ``name``; git/URL specs → last segment."""
    text = spec.strip()
    if text.startswith("@") and "/" in text:
        text = text.split("/", 1)[1]
    text = text.rsplit("/", 1)[-1]
    return re.split(r"[@=<>~!\[ ]", text, maxsplit=1)[0] or spec


def _model_core(model: str) -> str:
    """A model id reduced for comparison: lower case, no provider prefix, date stamp or ``-latest``."""
    text = model.strip().lower().rsplit("/", 1)[-1]
    text = text.split("@", 1)[0]
    text = re.sub(r"-latest$", "", text)
    text = re.sub(r"-(\d{8}|\d{4}-\d{2}-\d{2})$", "", text)
    return text


# --- identities ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """An executor or reviewer as far as planegate can tell; stored as JSON on each review row."""

    kind: str  # command | codex | agent | chatgpt | manual
    name: str  # what messages and the ledger show: command:claude, codex, agent:claude-code
    tools: tuple[str, ...] = ()  # tool names (as invoked and as resolved)
    programs: tuple[str, ...] = ()  # real paths of the program files the chain may finally run
    digests: tuple[str, ...] = ()  # sha256 of those files, so a copy is the same program
    models: tuple[tuple[str, str], ...] = ()  # (model, where it was declared)
    mentions: tuple[str, ...] = ()  # words of a final command's arguments (an unknown wrapper's program)
    via: tuple[str, ...] = ()
    opaque: tuple[str, ...] = ()  # why the program cannot be told
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "tools": list(self.tools),
            "programs": list(self.programs),
            "digests": list(self.digests),
            "models": [list(m) for m in self.models],
            "mentions": list(self.mentions),
            "via": list(self.via),
            "opaque": list(self.opaque),
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Identity:
        return cls(
            kind=str(data.get("kind", "")),
            name=str(data.get("name", "")),
            tools=tuple(data.get("tools", ())),
            programs=tuple(data.get("programs", ())),
            digests=tuple(data.get("digests", ())),
            models=tuple((str(m[0]), str(m[1])) for m in data.get("models", ())),
            mentions=tuple(data.get("mentions", ())),
            via=tuple(data.get("via", ())),
            opaque=tuple(data.get("opaque", ())),
            note=str(data.get("note", "")),
        )


def legacy_identity(name: str) -> Identity:
    """An identity known only by its recorded name (a review row written before identities)."""
    tail = name.split(":", 1)[-1]
    return Identity(kind="unknown", name=name, tools=(tail,) if tail else ())


_digests: dict[tuple[str, int, int, int], str | None] = {}
_digest_lock = threading.Lock()


def _digest(path: str) -> str | None:
    """sha256 of a program file, cached by its stat; None for a file over ``DIGEST_LIMIT``."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    key = (path, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _digest_lock:
        if key in _digests:
            return _digests[key]
    value = None
    if stat.st_size <= DIGEST_LIMIT and Path(path).is_file():
        try:
            value = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            value = None
    with _digest_lock:
        if len(_digests) > 512:
            _digests.clear()
        _digests[key] = value
    return value


def _locate(program: str, cwd: Path | None, search_path: str | None, *, script: bool = False) -> str | None:
    """The real path of the file ``program`` runs: a path (relative to ``cwd``), or for a program
    without a slash that is not a ``script``, a PATH lookup."""
    if "/" in program or script:
        candidate = Path(program) if Path(program).is_absolute() or cwd is None else cwd / program
        return os.path.realpath(candidate) if candidate.exists() else None
    found = shutil.which(program, path=search_path)
    return os.path.realpath(found) if found else None


# Resolving walks PATH for every word (~0.5 ms for a few wrappers); status views may reuse an
# answer this young, acceptance and request_review never do.
RECENT_S = 2.0
_recent: dict[tuple[Any, ...], tuple[float, Identity]] = {}
_recent_lock = threading.Lock()


def resolve_command(
    argv: Sequence[str],
    *,
    kind: str = "command",
    cwd: Path | None = None,
    search_path: str | None = None,
    models: Sequence[tuple[str, str]] = (),
    fresh: bool = True,
) -> Identity:
    """The identity of a command: its wrappers unwrapped, its program found and its links followed.

    ``cwd``: where relative program paths are looked up (the repository). ``search_path``: the
    PATH to search (default: this process's). ``models``: models the policy declares for it.
    ``fresh=False`` may return an answer resolved in the last ``RECENT_S`` seconds.
    """
    path = search_path if search_path is not None else os.environ.get("PATH", os.defpath)
    key = (tuple(argv), kind, str(cwd), path, tuple(models))
    now = time.monotonic()
    if not fresh:
        with _recent_lock:
            hit = _recent.get(key)
        if hit is not None and now - hit[0] < RECENT_S:
            return hit[1]
    found = _resolve(argv, kind, cwd, path, models)
    with _recent_lock:
        if len(_recent) > 256:
            _recent.clear()
        _recent[key] = (now, found)
    return found


def _resolve(
    argv: Sequence[str], kind: str, cwd: Path | None, path: str, models: Sequence[tuple[str, str]]
) -> Identity:
    unwrapped = unwrap(argv, lambda word: _locate(word, cwd, path))
    tools: list[str] = []
    programs: list[str] = []
    mentions: list[str] = []
    declared = list(models)
    for final in unwrapped.finals:
        if final.kind == "module":
            # `python -m pkg.tool.__main__` is `tool`: the last dotted name that says something.
            parts = [part for part in final.program.split(".") if part.lower() not in _GENERIC] or [final.program]
            names = [parts[-1]]
        elif final.kind == "package":
            names = [_package_tool(p) for p in (*final.packages, final.program) if p]
        else:
            names = [_tool_of_path(final.program)]
        if final.kind != "module":
            word = _package_tool(final.program) if final.kind == "package" else final.program
            real = _locate(word, cwd, path, script=final.kind == "script")
            if real:
                programs.append(real)
                names.append(_tool_of_path(real))
        tools += [n for n in names if n]
        declared += [(m, "--model in the command") for m in models_in(final.args)]
        mentions += [PurePosixPath(a).name for a in final.args[:32] if a and not a.startswith("-")]
    label = PurePosixPath(argv[0]).name if argv else "?"
    if unwrapped.finals:
        first = unwrapped.finals[0]
        label = {"package": _package_tool(first.program), "module": first.program}.get(
            first.kind, PurePosixPath(first.program).name
        )
    return Identity(
        kind=kind,
        name=f"command:{label}",
        tools=tuple(dict.fromkeys(tools)),
        programs=tuple(dict.fromkeys(programs)),
        digests=tuple(dict.fromkeys(d for d in map(_digest, programs) if d)),
        models=tuple(dict.fromkeys(declared)),
        mentions=tuple(dict.fromkeys(mentions)),
        via=tuple(unwrapped.via),
        opaque=tuple(unwrapped.opaque),
    )


def agent_identity(dispatched_by: str | None, policy: Policy) -> Identity:
    """The ``agent`` executor: the MCP client that dispatched the task, and its declared model."""
    actor = dispatched_by or "agent"
    client = actor.split(":", 1)[1] if ":" in actor else ""
    model = policy.executor.agent_model
    note = (
        ""
        if model
        else "the calling agent's model is not declared ([executor] agent_model), so only the client's "
        "self-chosen name was compared"
    )
    return Identity(
        kind="agent",
        name=actor,
        tools=(client,) if client else (),
        models=((model, "[executor] agent_model"),) if model else (),
        note=note,
    )


def executor_identity(
    executor: str | None, dispatched_by: str | None, policy: Policy, cwd: Path | None = None, *, fresh: bool = True
) -> Identity:
    """Who wrote a task's code, as an identity comparable with a reviewer's (``fresh``: see resolve_command)."""
    if executor == "codex":
        declared = [(policy.executor.model, "[executor] model")] if policy.executor.model else []
        found = resolve_command(
            [policy.executor.codex, "exec", *policy.executor.codex_args],
            kind="codex",
            cwd=cwd,
            models=declared,
            fresh=fresh,
        )
        return Identity(
            kind="codex",
            name="codex",
            tools=tuple(dict.fromkeys(("codex", *found.tools))),
            programs=found.programs,
            digests=found.digests,
            models=found.models,
            via=found.via,
            opaque=found.opaque,
        )
    if executor == "command" and policy.executor.command:
        return resolve_command(policy.executor.command, cwd=cwd, fresh=fresh)
    return agent_identity(dispatched_by, policy)


def reviewer_identity(policy: Policy, cwd: Path | None = None) -> Identity:
    """The configured reviewer (``[review] command`` must be set for ``command``; checked by the caller)."""
    review = policy.review
    declared = [(review.model, "[review] model")] if review.model else []
    if review.reviewer == "command" and review.command:
        return resolve_command(review.command, cwd=cwd, models=declared)
    if review.reviewer == "chatgpt":
        return Identity(kind="chatgpt", name="chatgpt", tools=("chatgpt",), models=tuple(declared))
    return Identity(kind=review.reviewer, name=review.reviewer, models=tuple(declared))


# --- comparing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """What was compared between a reviewer and an executor, and what matched."""

    same: bool
    matched: tuple[str, ...]
    compared: tuple[str, ...]
    unknown: tuple[str, ...] = ()  # why one side cannot be told

    def to_json(self) -> dict[str, Any]:
        return {
            "same": self.same,
            "matched": list(self.matched),
            "compared": list(self.compared),
            "unknown": list(self.unknown),
        }

    def reason(self, reviewer: Identity, executor: Identity) -> str:
        if self.unknown:
            return f"cannot tell whether reviewer {reviewer.name!r} is the task's executor ({executor.name!r}): " + (
                "; ".join(self.unknown)
            )
        return (
            f"reviewer {reviewer.name!r} is the task's own executor ({executor.name!r}): "
            + "; ".join(self.matched)
            + "; a second model must review"
        )

    def next_step(self) -> str:
        if self.unknown:
            return (
                "name the program directly in the policy's [review] command / [executor] command (no shell "
                "expansion, inline code or stdin), then request_review again"
            )
        return (
            "configure a reviewer that is another tool and model ([review] in .planegate/policy.toml; declare "
            "[review] model and [executor] agent_model / model so they can be compared), then request_review again"
        )


def _tools_match(a: str, b: str) -> bool:
    x, y = tool_core(a), tool_core(b)
    if not x or not y:
        return False
    if x == y:
        return True
    shorter, longer = sorted((x, y), key=len)
    return len(shorter) >= 3 and shorter in longer


def compare(reviewer: Identity, executor: Identity) -> Comparison:
    """Whether ``reviewer`` is ``executor`` by program file, tool name, argv mention or model.

    A human (``manual``) reviewer is never the executor. A side whose program cannot be told
    makes the comparison refuse (``unknown``) rather than guess.
    """
    if reviewer.kind == "manual":
        return Comparison(False, (), ("a human answers manual reviews",))
    compared: list[str] = []
    matched: list[str] = []
    unknown = [
        f"{who} {reason}" for who, side in (("reviewer:", reviewer), ("executor:", executor)) for reason in side.opaque
    ]
    if reviewer.programs or executor.programs:
        compared.append(f"program {list(reviewer.programs) or '-'} vs {list(executor.programs) or '-'}")
    common = sorted(set(reviewer.programs) & set(executor.programs))
    if common:
        matched.append(f"both run {', '.join(common)}")
    copies = set(reviewer.digests) & set(executor.digests)
    if reviewer.digests or executor.digests:
        compared.append("program content (sha256)")
    if copies and not common:
        matched.append(f"their programs are the same file content (sha256 {sorted(copies)[0][:12]})")
    compared.append(f"tool {list(reviewer.tools) or '-'} vs {list(executor.tools) or '-'}")
    pairs = [(a, b) for a in reviewer.tools for b in executor.tools if _tools_match(a, b)]
    if pairs:
        matched.append(f"tool {pairs[0][0]!r} is {pairs[0][1]!r}")
    mentioned = [
        (m, t)
        for side, other in ((reviewer, executor), (executor, reviewer))
        for m in side.mentions
        for t in other.tools
        if len(tool_core(t)) >= 3 and tool_core(m) == tool_core(t)
    ]
    if reviewer.mentions or executor.mentions:
        compared.append("argv mentions of the other's tool")
    if mentioned and not pairs:
        matched.append(f"the command runs {mentioned[0][0]!r}, the other's tool")
    reviewer_models = [f"{m} ({src})" for m, src in reviewer.models] or ["not declared"]
    executor_models = [f"{m} ({src})" for m, src in executor.models] or ["not declared"]
    compared.append(f"model {', '.join(reviewer_models)} vs {', '.join(executor_models)}")
    same_models = [
        (a, b) for a, _ in reviewer.models for b, _ in executor.models if a and b and _model_core(a) == _model_core(b)
    ]
    if same_models:
        matched.append(f"both declare model {same_models[0][0]!r}")
    for note in (reviewer.note, executor.note):
        if note:
            compared.append(note)
    return Comparison(bool(matched or unknown), tuple(matched), tuple(compared), tuple(unknown))
