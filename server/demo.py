"""``planegate demo``: one whole run on a scratch repository, through the real MCP tools.

The demo makes a small Python library in a temporary directory (with its own git identity, so it
works on a machine that has none) and a scratch ``PLANEGATE_HOME``, then drives the tools an
orchestrating agent would call, through an in-memory MCP client with the server's own job worker:
freeze, graph, dispatch (a ``command`` executor writes each task's code and test), server-run
checks with red→green proof, a review by a command reviewer that reads the diff, accept, the
release review, the human approval, ``accept_run`` and the report. The approval is signed, as
``[approval] mode = "signed"`` asks: the demo makes a throwaway SSH key (``ssh-keygen -t ed25519
-N ''``), lists it in the scratch repository's ``.planegate/allowed_signers``, signs the approval
with it, and checks the signed tag ``planegate/<run>/approved`` with ``git tag -v``. Nothing
outside the scratch directory is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

DEMO_FILES = {
    "README.md": "# textstats\n\nA tiny library the planegate demo changes.\n",
    "textstats/__init__.py": '"""Text statistics."""\n',
    "textstats/words.py": "def word_count(text: str) -> int:\n    return len(text.split())\n",
    "tests/__init__.py": "",
    "tests/test_words.py": (
        "import unittest\n\nfrom textstats.words import word_count\n\n\n"
        "class WordCount(unittest.TestCase):\n    def test_counts_words(self):\n"
        "        self.assertEqual(word_count('a b c'), 3)\n"
    ),
}

# What the command executor writes for each task (PLANEGATE_TASK tells it which).
AGENT = '''"""The demo's executor: writes one task's code and its test in the task worktree."""
import os
import pathlib

WORK = {
    "line-count": {
        "textstats/lines.py": (
            "def line_count(text: str) -> int:\\n"
            "    return len(text.splitlines())\\n"
        ),
        "tests/test_lines.py": (
            "import unittest\\n\\nfrom textstats.lines import line_count\\n\\n\\n"
            "class LineCount(unittest.TestCase):\\n"
            "    def test_counts_lines(self):\\n        self.assertEqual(line_count('a\\\\nb'), 2)\\n\\n"
            "    def test_empty_text_has_no_lines(self):\\n        self.assertEqual(line_count(''), 0)\\n"
        ),
    },
    "avg-word-length": {
        "textstats/words.py": (
            "def word_count(text: str) -> int:\\n    return len(text.split())\\n\\n\\n"
            "def average_word_length(text: str) -> float:\\n"
            "    words = text.split()\\n"
            "    return sum(len(w) for w in words) / len(words) if words else 0.0\\n"
        ),
        "tests/test_average.py": (
            "import unittest\\n\\nfrom textstats.words import average_word_length\\n\\n\\n"
            "class AverageWordLength(unittest.TestCase):\\n"
            "    def test_average(self):\\n        self.assertEqual(average_word_length('ab abcd'), 3.0)\\n\\n"
            "    def test_empty_text(self):\\n        self.assertEqual(average_word_length(''), 0.0)\\n"
        ),
    },
}
for name, text in WORK[os.environ["PLANEGATE_TASK"]].items():
    path = pathlib.Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print("wrote", name)
'''

REQUIREMENTS = [
    {
        "id": "R1",
        "statement": "The library reports the number of lines in a text.",
        "acceptance_criteria": ["line_count('a\\nb') == 2", "line_count('') == 0"],
    },
    {
        "id": "R2",
        "statement": "The library reports the average word length of a text.",
        "acceptance_criteria": ["average_word_length('ab abcd') == 3.0", "average_word_length('') == 0.0"],
    },
]

MODULES = [
    {"name": "lines", "owns": ["textstats/lines.py"]},
    {"name": "words", "owns": ["textstats/words.py", "textstats/__init__.py"]},
    {"name": "tests", "owns": ["tests/**"], "depends_on": ["lines", "words"]},
]

TASKS = [
    {
        "id": "line-count",
        "title": "Add line_count",
        "goal": "Add textstats/lines.py with line_count(text), and its tests.",
        "scope": ["textstats/lines.py"],
        "requirements": ["R1"],
        "acceptance": ["tests cover the empty text"],
    },
    {
        "id": "avg-word-length",
        "title": "Add average_word_length",
        "goal": "Add average_word_length(text) to textstats/words.py, and its tests.",
        "depends_on": ["line-count"],
        "scope": ["textstats/words.py"],
        "requirements": ["R2"],
    },
]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, timeout=60)


DEMO_SIGNER = "demo@planegate.invalid"


def policy_text(agent: Path) -> str:
    python = json.dumps(sys.executable)
    return f"""# The demo's policy: every gate on, a command executor, a command reviewer, signed approval.
max_files = 10
max_changed_lines = 200

[checks]
test = [{python}, "-m", "unittest", "discover", "-s", "tests", "-t", "."]

[executor]
command = [{python}, {json.dumps(str(agent))}]

[review]
reviewer = "command"
command = [{python}, "-m", "planegate.server.demo_reviewer"]

[approval]
mode = "signed"
allowed_signers = ".planegate/allowed_signers"
"""


def make_key(root: Path) -> Path:
    """A throwaway SSH key with no passphrase: fine for a demo, never for real approvals."""
    key = root / "approver-key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "planegate demo approver", "-f", str(key)],
        check=True,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return key


def make_scratch_repo(root: Path) -> tuple[Path, Path]:
    """The scratch repository and the throwaway key its allowed signers list."""
    repo = root / "textstats"
    repo.mkdir(parents=True)
    agent = root / "agent.py"
    agent.write_text(AGENT, encoding="utf-8")
    key = make_key(root)
    public = " ".join(Path(f"{key}.pub").read_text(encoding="utf-8").split()[:2])
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.name", "planegate demo")
    _git(repo, "config", "user.email", DEMO_SIGNER)
    files = {
        **DEMO_FILES,
        ".planegate/policy.toml": policy_text(agent),
        ".planegate/allowed_signers": f'{DEMO_SIGNER} namespaces="git,planegate" {public}\n',
    }
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "textstats: initial")
    return repo, key


class Printer:
    def __init__(self) -> None:
        self.step = 0

    def __call__(self, title: str, detail: str = "") -> None:
        self.step += 1
        print(f"\n[{self.step}] {title}", flush=True)
        for line in detail.rstrip().splitlines():
            print(f"    {line}", flush=True)


class Demo:
    def __init__(self, client: Any, say: Printer) -> None:
        self.client = client
        self.say = say

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result = await self.client.call_tool(tool, arguments)
        if result.is_error:
            text = " ".join(getattr(block, "text", "") for block in result.content)
            raise DemoFailed(f"{tool} failed: {text}")
        return dict(result.structured_content or {})

    async def refused(self, tool: str, **arguments: Any) -> str:
        result = await self.client.call_tool(tool, arguments)
        text = " ".join(getattr(block, "text", "") for block in result.content)
        if not result.is_error:
            raise DemoFailed(f"{tool} was expected to be refused")
        return text

    async def until_done(self, tool: str, key: str, value: Any, field: str = "state") -> dict[str, Any]:
        while True:
            result = await self.call(tool, **{key: value, "wait_seconds": 30})
            if result[field] not in ("queued", "running"):
                return result

    async def task(self, run: str, task: str) -> None:
        dispatched = await self.call("dispatch_task", run=run, task=task, executor="command")
        self.say(
            f"dispatch_task {task}",
            f"worktree {dispatched['worktree']}\nbranch {dispatched['branch']}, "
            f"base {dispatched['base_sha'][:12]}, lease until {dispatched['lease_expires']}",
        )
        job = await self.until_done("get_job", "job", dispatched["job"])
        if job["state"] != "succeeded":
            raise DemoFailed(f"the executor job {job['state']}: {job['error']}")
        self.say(
            "the command executor wrote the code and a test",
            f"committed {job['result']['commit'][:12]} on {dispatched['branch']}",
        )
        checks = await self.call("run_checks", run=run, task=task)
        results = checks["results"]
        if checks["state"] in ("queued", "running"):
            results = (await self.until_done("get_job", "job", checks["job"]))["checks"] or []
        lines = "\n".join(f"{c['summary'].splitlines()[0]} ({c['label']} evidence {c['evidence']})" for c in results)
        self.say(f"run_checks {task}: the server ran the checks on the head commit", lines)
        requested = await self.call("request_review", run=run, task=task)
        reviewed = await self.until_done("get_review", "review", requested["review"])
        self.say(
            f"request_review {task}: {reviewed['verdict']} by {reviewed['reviewer']}",
            f"{reviewed['summary']}\nrequirements: {reviewed['requirements']}",
        )
        accepted = await self.call("accept_task", run=run, task=task)
        self.say(
            f"accept_task {task}: every gate holds",
            f"merged --no-ff as {accepted['merge_sha'][:12]}, checkpoint {accepted['checkpoint']}"
            + (f"\nunlocked: {', '.join(accepted['unlocked'])}" if accepted["unlocked"] else ""),
        )


class DemoFailed(Exception):
    pass


async def drive(home: Path, repo: Path, key: Path, say: Printer) -> str | None:
    from mcp import Client

    from planegate.tools.config import Settings

    from .app import build_server

    server = build_server(Settings(home=home, actor="agent:demo"), worker_delay_s=0)
    async with Client(server) as client:
        try:
            return await _lifecycle(Demo(client, say), home, repo, key, say)
        except DemoFailed as exc:
            print(f"\ndemo failed: {exc}", file=sys.stderr)
            return None


async def _lifecycle(demo: Demo, home: Path, repo: Path, key: Path, say: Printer) -> str:
    started = await demo.call("start_run", repo=str(repo), goal="Add line and word statistics")
    run = str(started["run"])
    say(
        "start_run",
        f"run {run}\nbase {started['base_sha'][:12]}, integration branch "
        f"{started['integration_branch']}\npolicy: {started['policy']}",
    )
    frozen = await demo.call("freeze_requirements", run=run, requirements=REQUIREMENTS)
    say(
        "freeze_requirements",
        f"R1, R2 frozen as version {frozen['version']} (sha256 {frozen['content_sha256'][:16]})",
    )
    await demo.call(
        "freeze_architecture",
        run=run,
        modules=MODULES,
        decisions=[{"title": "pure functions", "decision": "statistics are pure functions of the text"}],
    )
    say("freeze_architecture", "modules lines, words, tests; one decision")
    graph = await demo.call("register_graph", run=run, tasks=TASKS)
    say("register_graph", f"waves {json.dumps(graph['waves'])}\ncoverage {json.dumps(graph['coverage'])}")
    for task in ("line-count", "avg-word-length"):
        await demo.task(run, task)
    checks = await demo.call("run_checks", run=run)
    say(
        "run_checks on the integration head",
        "\n".join(f"{c['check']}: exit {c['exit_code']}" for c in checks["results"]),
    )
    requested = await demo.call("request_review", run=run, release=True)
    reviewed = await demo.until_done("get_review", "review", requested["review"])
    say(f"release review: {reviewed['verdict']}", reviewed["summary"] or "")
    refusal = await demo.refused("accept_run", run=run)
    say("accept_run is refused: no human has said yes", refusal.splitlines()[-1])
    approval = await anyio.to_thread.run_sync(sign_approval, home, run, key)
    say(
        "the human approval, signed",
        f"signed by {approval.principal} at {approval.head_sha[:12]} with the demo's throwaway key\n"
        f"tag {approval.tag}\n"
        f"(running the demo is your yes; in real use you run `planegate approve {run}` in your own terminal,\n"
        "which shows what you approve and signs it with your SSH key: an agent that cannot use the key cannot)",
    )
    allowed = f"gpg.ssh.allowedSignersFile={repo / '.planegate' / 'allowed_signers'}"
    checked = subprocess.run(
        ["git", "-c", allowed, "tag", "-v", str(approval.tag)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if checked.returncode != 0:
        raise DemoFailed(f"git tag -v {approval.tag} failed: {checked.stderr.strip()}")
    signature_line = next((line for line in checked.stderr.splitlines() if "signature" in line), checked.stderr)
    message = checked.stdout.split("\n\n", 1)[-1].strip()
    say(f"git tag -v {approval.tag}", f"{signature_line.strip()}\nthe signed statement:\n{message}")
    accepted = await demo.call("accept_run", run=run)
    say(
        "accept_run: the run is accepted",
        "\n".join(f"{g['gate']}: {g['reason']}" for g in accepted["gates"])
        + f"\nreport: {accepted['report']}\n        {accepted['report_html']}",
    )
    verify = subprocess.run(
        [sys.executable, "-m", "planegate.server.cli", "ledger", "verify"],
        env={**os.environ, "PLANEGATE_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    say("planegate ledger verify", (verify.stdout or verify.stderr).strip())
    return run


def sign_approval(home: Path, run: str, key: Path) -> Any:
    """Approve ``run`` as the human would with ``planegate approve``, signing with the demo's key."""
    from planegate.tools.config import Settings, os_user
    from planegate.tools.env import Env
    from planegate.tools.gates.release import approve_signed
    from planegate.tools.gates.signing import key_from_spec

    human = Env.open(Settings(home=home, actor=f"user:{os_user()}"))
    try:
        return approve_signed(human, run, key_from_spec(str(key), "the demo's throwaway key"), "demo")
    finally:
        human.close()


def run_demo(keep: bool = False) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="planegate-demo-"))
    home = scratch / "home"
    say = Printer()
    print("planegate demo: a whole change on a scratch repository, through the MCP tools an agent calls")
    try:
        if shutil.which("ssh-keygen") is None:
            print("planegate demo: ssh-keygen is missing; install OpenSSH's client (openssh-client)", file=sys.stderr)
            return 1
        repo, key = make_scratch_repo(scratch)
        say(
            "scratch repository",
            f"{repo}: a tiny Python library with tests, a .planegate/policy.toml asking for signed approval,\n"
            f"and .planegate/allowed_signers listing a throwaway key made for the demo ({key})",
        )
        run = anyio.run(drive, home, repo, key, say)
        if run is None:
            return 1
        print(f"\ndemo finished: run {run} accepted")
        if keep:
            print(f"kept: repository {repo}\n      state PLANEGATE_HOME={home}")
            print(f"look: PLANEGATE_HOME={home} planegate status {run}")
        return 0
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
