"""The ``codex`` executor: the argv for ``codex exec`` and a summary of its JSONL events.

The argv, checked against ``codex exec --help`` of codex-cli 0.169.0 (kept in
``tests/fakes/codex_exec_help.txt``)::

    codex exec --json --skip-git-repo-check -s workspace-write -C <worktree> \\
        -o <last-message-file> [-m <model>] [extra...] -- <prompt>

Every flag is spelled as the CLI documents it. The one addition to the shape in the design is
the ``--`` before the prompt, which the CLI accepts (clap): without it a prompt starting with
``-`` is rejected as an unknown flag (exit 2), and a prompt that is exactly a subcommand name
(``review``, ``resume``, ``fork``, ``help``) runs that subcommand instead. After ``--`` both
are plain prompt text. Two things ``--`` does not neutralise, so they are refused here: a
prompt of ``-`` (the CLI then reads the prompt from stdin) and a blank prompt.

Run it with stdin at ``/dev/null`` (``run_process`` does so unless given ``stdin_text``):
when stdin is piped the CLI appends it to the prompt as a ``<stdin>`` block.

With ``--json`` the CLI prints one event per line on stdout: ``thread.started``
(``thread_id``), ``turn.started``, ``turn.completed`` (``usage``), ``turn.failed``
(``error.message``), ``item.started`` / ``item.updated`` / ``item.completed`` (``item`` with a
``type`` such as ``agent_message``, ``reasoning``, ``command_execution``, ``file_change``,
``mcp_tool_call``, ``web_search``, ``todo_list`` or ``error``) and ``error`` (``message``).
``parse_codex_events`` reads what it knows of these and counts everything else, so a newer CLI
with more event kinds still parses.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, NotFound

__all__ = ["CodexSummary", "codex_exec_argv", "parse_codex_events"]

# Linux refuses a single argument longer than MAX_ARG_STRLEN (32 pages) with E2BIG.
MAX_PROMPT_BYTES = 128 * 1024 - 1

# Flags codex_exec_argv sets itself: passing them again in extra_args would make the CLI fail
# ("cannot be used multiple times") or silently undo the sandbox the design asks for.
_RESERVED_LONG = frozenset(
    {
        "--json",
        "--skip-git-repo-check",
        "--sandbox",
        "--cd",
        "--output-last-message",
        "--model",
        "--dangerously-bypass-approvals-and-sandbox",
    }
)
_RESERVED_SHORT = frozenset({"-s", "-C", "-o", "-m"})


def codex_exec_argv(
    *,
    codex: str,
    worktree: Path,
    last_message_file: Path,
    prompt: str,
    model: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The argv that runs ``codex exec`` on ``prompt`` inside ``worktree``.

    Raises:
        InvalidInput: ``codex`` empty or starting with ``-``; ``worktree`` or
            ``last_message_file`` not absolute; ``prompt`` blank, ``-``, containing NUL or over
            ``MAX_PROMPT_BYTES``; ``model`` empty or starting with ``-``; an ``extra_args``
            element that is ``--``, contains NUL, or repeats a flag set here.
    """
    if not codex or codex.startswith("-"):
        raise InvalidInput(f"codex command {codex!r} is not a command; name the codex executable, e.g. 'codex'")
    for name, path in (("worktree", worktree), ("last_message_file", last_message_file)):
        if not path.is_absolute():
            raise InvalidInput(f"{name} {str(path)!r} is relative; pass an absolute path (codex resolves -C/-o itself)")
    if not prompt.strip() or prompt == "-":
        raise InvalidInput(f"prompt {prompt[:40]!r} is empty or '-'; codex would read the prompt from stdin instead")
    if "\x00" in prompt:
        raise InvalidInput("prompt contains a NUL character, which cannot be passed in argv; remove it")
    size = len(prompt.encode("utf-8"))
    if size > MAX_PROMPT_BYTES:
        raise InvalidInput(
            f"prompt is {size} bytes, over the {MAX_PROMPT_BYTES}-byte limit of one argument; "
            "shorten it and point codex at the task envelope file in the worktree for the details"
        )
    argv = [codex, "exec", "--json", "--skip-git-repo-check", "-s", "workspace-write"]
    argv += ["-C", str(worktree), "-o", str(last_message_file)]
    if model is not None:
        if not model or model.startswith("-"):
            raise InvalidInput(f"model {model!r} is not a model name; use a name such as 'gpt-5-codex' or omit it")
        argv += ["-m", model]
    for arg in extra_args:
        _check_extra(arg)
    argv += [*extra_args, "--", prompt]
    return argv


def _check_extra(arg: str) -> None:
    if arg == "--" or "\x00" in arg:
        raise InvalidInput(f"extra codex argument {arg!r} would end the options early or is not passable; remove it")
    name = arg.split("=", 1)[0]
    short = arg[:2] if arg.startswith("-") and not arg.startswith("--") else None
    if name in _RESERVED_LONG or short in _RESERVED_SHORT:
        raise InvalidInput(
            f"extra codex argument {arg!r} repeats a flag planegate sets itself "
            "(--json, --skip-git-repo-check, -s, -C, -o, -m; the sandbox stays workspace-write); "
            "remove it from .planegate/policy.toml"
        )


@dataclass(frozen=True)
class CodexSummary:
    """What a ``codex exec --json`` run reported.

    ``item_counts`` counts completed items by item type. ``final_message`` is the text of the
    last completed ``agent_message`` item; ``errors`` holds the messages of ``error`` events,
    ``turn.failed`` events and completed ``error`` items, in order. ``usage`` sums the token
    counts of every ``turn.completed``.
    """

    event_counts: dict[str, int] = field(default_factory=dict)
    item_counts: dict[str, int] = field(default_factory=dict)
    thread_id: str | None = None
    final_message: str | None = None
    errors: tuple[str, ...] = ()
    turn_completed: bool = False
    turn_failed: bool = False
    files_changed: tuple[str, ...] = ()
    usage: dict[str, int] = field(default_factory=dict)
    non_json_lines: int = 0


def parse_codex_events(jsonl_path: Path) -> CodexSummary:
    """Summarize the JSONL events ``codex exec --json`` wrote to ``jsonl_path``.

    Lines that are not JSON objects are counted in ``non_json_lines`` and otherwise ignored; so
    are fields of unexpected types.

    Raises:
        NotFound: ``jsonl_path`` does not exist.
    """
    events: Counter[str] = Counter()
    items: Counter[str] = Counter()
    usage: Counter[str] = Counter()
    errors: list[str] = []
    files: dict[str, None] = {}
    thread_id = final_message = None
    completed = failed = False
    non_json = 0
    try:
        handle = jsonl_path.open("r", encoding="utf-8", errors="replace")
    except FileNotFoundError as exc:
        raise NotFound(f"codex event log {str(jsonl_path)!r} does not exist; was the executor started?") from exc
    with handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                non_json += 1
                continue
            kind = event["type"]
            events[kind] += 1
            if kind == "thread.started" and isinstance(event.get("thread_id"), str):
                thread_id = event["thread_id"]
            elif kind == "turn.completed":
                completed = True
                for key, value in _dict(event.get("usage")).items():
                    if isinstance(value, int):
                        usage[key] += value
            elif kind == "turn.failed":
                failed = True
                errors.append(_text(_dict(event.get("error")).get("message")) or "turn failed")
            elif kind == "error":
                errors.append(_text(event.get("message")) or "error")
            elif kind.startswith("item."):
                item = _dict(event.get("item"))
                item_type = _text(item.get("type")) or "unknown"
                if kind != "item.completed":
                    continue
                items[item_type] += 1
                if item_type == "agent_message" and isinstance(item.get("text"), str):
                    final_message = item["text"]
                elif item_type == "error":
                    errors.append(_text(item.get("message")) or "error item")
                elif item_type == "file_change" and isinstance(item.get("changes"), list):
                    for change in item["changes"]:
                        path = _text(_dict(change).get("path"))
                        if path:
                            files[path] = None
    return CodexSummary(
        event_counts=dict(events),
        item_counts=dict(items),
        thread_id=thread_id,
        final_message=final_message,
        errors=tuple(errors),
        turn_completed=completed,
        turn_failed=failed,
        files_changed=tuple(files),
        usage=dict(usage),
        non_json_lines=non_json,
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
