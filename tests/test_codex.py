"""The codex executor: argv checked against the real CLI's help, run against a scripted fake."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from planegate.tools.errors import InvalidInput, NotFound
from planegate.tools.execution.codex import MAX_PROMPT_BYTES, codex_exec_argv, parse_codex_events
from planegate.tools.execution.procs import ProcessResult, run_process, scrubbed_env
from tests.helpers import git, make_repo

FAKES = Path(__file__).parent / "fakes"
SAVED_HELP = FAKES / "codex_exec_help.txt"


def real_exec_help() -> str:
    """``codex exec --help`` from a real codex on PATH, else the copy saved from codex-cli."""
    found = shutil.which("codex")
    if found and Path(found).resolve().parent != FAKES.resolve():
        done = subprocess.run([found, "exec", "--help"], capture_output=True, text=True, timeout=60, check=True)
        return done.stdout
    return SAVED_HELP.read_text()


def documented_options(help_text: str) -> dict[str, str | None]:
    """Every spelling of every option in the help → its value placeholder (None for flags)."""
    options: dict[str, str | None] = {}
    for match in re.finditer(r"^\s+(?:(-[A-Za-z]), )?(--[a-z0-9-]+)(?: <([^>]+)>)?", help_text, re.MULTILINE):
        short, long, value = match.groups()
        options[long] = value
        if short:
            options[short] = value
    return options


def argv_for(worktree: Path, prompt: str = "Implement the task in .planegate-task.md", **kwargs: Any) -> list[str]:
    return codex_exec_argv(
        codex="codex",
        worktree=worktree,
        last_message_file=worktree.parent / "last-message.txt",
        prompt=prompt,
        **kwargs,
    )


def run_fake(tmp_path: Path, argv: list[str], scenario: dict | None = None, **kwargs: object) -> ProcessResult:
    extra = {"FAKE_CODEX_LOG": str(tmp_path / "codex-calls.jsonl")}
    if scenario is not None:
        (tmp_path / "scenario.json").write_text(json.dumps(scenario))
        extra["FAKE_CODEX_SCENARIO"] = str(tmp_path / "scenario.json")
    env = scrubbed_env(extra=extra)
    env["PATH"] = f"{FAKES}{os.pathsep}{env.get('PATH', os.defpath)}"
    options: dict = {
        "cwd": tmp_path,
        "timeout_s": 30.0,
        "env": env,
        "stdout_path": tmp_path / "codex.jsonl",
        "stderr_path": tmp_path / "codex.stderr",
    }
    options.update(kwargs)
    return run_process(argv, **options)


def logged_calls(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "codex-calls.jsonl").read_text().splitlines()]


def test_the_argv_has_the_documented_shape(tmp_path: Path) -> None:
    worktree = tmp_path / "wt"
    assert argv_for(worktree, "Do it", model="gpt-5-codex", extra_args=["-c", 'model_reasoning_effort="high"']) == [
        "codex",
        "exec",
        "--json",
        "--skip-git-repo-check",
        "-s",
        "workspace-write",
        "-C",
        str(worktree),
        "-o",
        str(tmp_path / "last-message.txt"),
        "-m",
        "gpt-5-codex",
        "-c",
        'model_reasoning_effort="high"',
        "--",
        "Do it",
    ]


def test_every_flag_we_pass_is_documented_by_the_real_cli(tmp_path: Path) -> None:
    help_text = real_exec_help()
    options = documented_options(help_text)
    assert "[PROMPT]" in help_text
    argv = argv_for(tmp_path / "wt", model="gpt-5-codex")
    flags = argv[2 : argv.index("--")]
    i = 0
    while i < len(flags):
        flag = flags[i]
        assert flag in options, f"{flag} is not in 'codex exec --help'"
        i += 2 if options[flag] else 1
    sandbox = re.search(r"--sandbox <SANDBOX_MODE>.*?\[possible values: ([^\]]+)\]", help_text, re.DOTALL)
    assert sandbox is not None
    assert "workspace-write" in sandbox.group(1).split(", ")
    assert re.fullmatch(r"codex-cli \d+\.\d+\.\d+\n?", (FAKES / "CODEX_VERSION").read_text())


def test_the_fake_accepts_our_argv_and_does_the_scripted_work(tmp_path: Path) -> None:
    worktree = make_repo(tmp_path / "wt")
    scenario = {
        "write": {"src/feature.py": "VALUE = 2\n", "tests/test_feature.py": "def test_value():\n    pass\n"},
        "commit": True,
        "commit_message": "Add the feature",
        "last_message": "Added the feature and its test.",
    }
    result = run_fake(tmp_path, argv_for(worktree), scenario)

    assert result.ok, result.tail()
    assert (worktree / "src/feature.py").read_text() == "VALUE = 2\n"
    assert git(worktree, "log", "-1", "--format=%s") == "Add the feature"
    assert (tmp_path / "last-message.txt").read_text() == "Added the feature and its test."
    summary = parse_codex_events(result.stdout_path)
    assert summary.thread_id
    assert summary.turn_completed and not summary.turn_failed
    assert summary.final_message == "Added the feature and its test."
    assert summary.item_counts == {"file_change": 2, "command_execution": 1, "agent_message": 1}
    assert summary.event_counts["thread.started"] == 1
    assert summary.files_changed == (str(worktree / "src/feature.py"), str(worktree / "tests/test_feature.py"))
    assert summary.usage["output_tokens"] > 0
    assert summary.errors == () and summary.non_json_lines == 0
    assert logged_calls(tmp_path)[0]["argv"] == argv_for(worktree)[1:]


def test_the_fake_rejects_an_unknown_flag_like_the_real_cli(tmp_path: Path) -> None:
    worktree = make_repo(tmp_path / "wt")
    result = run_fake(tmp_path, argv_for(worktree, extra_args=["--no-such-flag"]))
    assert result.exit_code == 2
    assert "unexpected argument '--no-such-flag' found" in result.stderr_path.read_text()
    assert logged_calls(tmp_path)[0]["prompt"] is None
    assert not (tmp_path / "last-message.txt").exists()


@pytest.mark.parametrize("prompt", ["-rf everything --json", "--help", "review"])
def test_a_prompt_that_looks_like_a_flag_or_subcommand_stays_the_prompt(tmp_path: Path, prompt: str) -> None:
    worktree = make_repo(tmp_path / "wt")
    result = run_fake(tmp_path, argv_for(worktree, prompt))
    assert result.ok, result.tail()
    assert logged_calls(tmp_path)[0]["prompt"] == prompt


def test_a_failing_run_is_summarized_with_its_error(tmp_path: Path) -> None:
    worktree = make_repo(tmp_path / "wt")
    scenario = {"exit_code": 1, "error": "model refused", "last_message": "I could not finish."}
    result = run_fake(tmp_path, argv_for(worktree), scenario)
    assert result.exit_code == 1
    summary = parse_codex_events(result.stdout_path)
    assert summary.turn_failed and not summary.turn_completed
    assert summary.errors == ("model refused", "model refused")
    assert summary.final_message == "I could not finish."


def test_a_slow_fake_is_stopped_at_the_deadline(tmp_path: Path) -> None:
    worktree = make_repo(tmp_path / "wt")
    # 5 s leaves a loaded machine time to start Python and print the first events; the fake would sleep 30
    result = run_fake(tmp_path, argv_for(worktree), {"sleep_s": 30}, timeout_s=5.0, grace_s=1.0)
    assert result.timed_out
    assert result.duration_s < 15.0
    assert parse_codex_events(result.stdout_path).event_counts == {"thread.started": 1, "turn.started": 1}


def test_the_fake_requires_the_worktree_to_exist(tmp_path: Path) -> None:
    result = run_fake(tmp_path, argv_for(tmp_path / "missing"))
    assert result.exit_code == 1
    assert "No such file or directory" in result.stderr_path.read_text()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prompt": "   "}, "empty or '-'"),
        ({"prompt": "-"}, "empty or '-'"),
        ({"prompt": "x" * (MAX_PROMPT_BYTES + 1)}, "byte limit"),
        ({"worktree": Path("relative/wt")}, "is relative"),
        ({"codex": "--codex"}, "not a command"),
        ({"model": "-x"}, "not a model name"),
        ({"extra_args": ["--"]}, "end the options"),
        ({"extra_args": ["-s", "danger-full-access"]}, "repeats a flag"),
        ({"extra_args": ["--sandbox=danger-full-access"]}, "repeats a flag"),
        ({"extra_args": ["-Cother"]}, "repeats a flag"),
        ({"extra_args": ["--dangerously-bypass-approvals-and-sandbox"]}, "repeats a flag"),
    ],
)
def test_codex_exec_argv_refuses_what_would_change_its_meaning(tmp_path: Path, overrides: dict, message: str) -> None:
    arguments: dict = {
        "codex": "codex",
        "worktree": tmp_path / "wt",
        "last_message_file": tmp_path / "last.txt",
        "prompt": "Do it",
        **overrides,
    }
    with pytest.raises(InvalidInput, match=re.escape(message)):
        codex_exec_argv(**arguments)


def test_parse_codex_events_tolerates_noise(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    lines = [
        '{"type":"thread.started","thread_id":"t-1"}',
        "Reading additional input from stdin...",
        "[1, 2]",
        '{"no_type": true}',
        "",
        '{"type":"error","message":"Reconnecting... 2/5"}',
        '{"type":"item.started","item":{"id":"item_0","type":"command_execution","command":"pytest"}}',
        '{"type":"item.completed","item":{"id":"item_0","type":"command_execution","exit_code":0}}',
        '{"type":"item.completed","item":{"id":"item_1","type":"error","message":"fell back to HTTPS"}}',
        '{"type":"item.completed","item":{"id":"item_2","type":"agent_message","text":"first"}}',
        '{"type":"item.completed","item":{"id":"item_3","type":"agent_message","text":"final"}}',
        '{"type":"item.completed","item":{"type":"file_change","changes":"not a list"}}',
        '{"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":2,"output_tokens":3}}',
        '{"type":"turn.completed","usage":{"input_tokens":5,"output_tokens":"many"}}',
        '{"type":"some.future_event","payload":{}}',
        '{"type":"item.completed","item":{"type":"agent_message","text":"tr',
    ]
    log.write_text("\n".join(lines) + "\n")

    summary = parse_codex_events(log)

    assert summary.thread_id == "t-1"
    assert summary.final_message == "final"
    assert summary.errors == ("Reconnecting... 2/5", "fell back to HTTPS")
    assert summary.non_json_lines == 4
    assert summary.usage == {"input_tokens": 15, "cached_input_tokens": 2, "output_tokens": 3}
    assert summary.event_counts["item.completed"] == 5
    assert summary.event_counts["some.future_event"] == 1
    assert summary.item_counts == {"command_execution": 1, "error": 1, "agent_message": 2, "file_change": 1}
    assert summary.turn_completed and not summary.turn_failed
    with pytest.raises(NotFound, match="does not exist"):
        parse_codex_events(tmp_path / "missing.jsonl")
