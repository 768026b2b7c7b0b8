"""Reviewer backends behind one small protocol, chosen by the policy's ``[review] reviewer``.

- ``chatgpt``: the user's logged-in ChatGPT web session through the Playwright bridge; the
  packet goes inline when it fits (else as files), the conversation URL is reported as soon as
  the prompt is sent, and a restarted job re-reads that conversation instead of sending again. A
  reply still coming at the deadline raises the bridge's ``ReplyPending`` (the review job keeps
  the review for a later re-read); liveness goes to ``on_progress`` and failure screenshots and
  DOM summaries to ``diagnostics_dir``. ``last`` holds the bridge's account of the latest reply
  (how it was sent and read, the model it confirmed, fallbacks, notes).
- ``command``: any CLI given the prompt on stdin that prints its answer on stdout (``codex exec
  -``, ``claude -p``); stateless, so a repair is a fresh call with the earlier reply quoted.
- ``manual``: no process at all; a human answers with ``planegate review submit`` and the same
  parsing applies (see ``review.submit_review``).

``identity`` names the reviewer the way executors are named; ``reviewer_identity`` resolves it
(wrappers, symlinks, declared model) so ``request_review`` and the review gate can refuse a model
reviewing its own work.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..config import Settings
from ..errors import InvalidInput, ReviewError
from ..execution.procs import DEFAULT_ENV_ALLOW, run_process, scrubbed_env
from ..gates import identity
from ..policy import Policy
from .review_parse import END

if TYPE_CHECKING:
    from planegate.bridge import BridgeReply, Progress


class Reviewer(Protocol):
    identity: str

    def ask(
        self, prompt: str, files: Sequence[Path], on_sent: Callable[[str], None], inline: str | None = None
    ) -> str: ...

    def repair(self, prompt: str, reply: str, repair_prompt: str, conversation: str | None) -> str: ...

    def recover(self, conversation: str) -> str: ...


def reviewer_identity(policy: Policy, repo: Path | None = None) -> identity.Identity:
    """The configured reviewer, resolved (relative program paths are looked up in ``repo``).

    Raises:
        InvalidInput: reviewer "command" without ``[review] command``.
    """
    review = policy.review
    if review.reviewer == "command" and not review.command:
        raise InvalidInput(
            'reviewer "command" needs [review] command = [...] in .planegate/policy.toml, e.g. ["codex", "exec", "-"]'
        )
    return identity.reviewer_identity(policy, cwd=repo)


class CommandReviewer:
    def __init__(self, policy: Policy, logs: Path, on_tick: Callable[[float], None] | None = None) -> None:
        self.identity = reviewer_identity(policy).name  # refuses a missing [review] command
        self.argv = list(policy.review.command or ())
        self.timeout_s = policy.review.timeout_s
        self.env = scrubbed_env([*DEFAULT_ENV_ALLOW, *policy.review.env_allow])
        self.logs = logs
        self.on_tick = on_tick
        self.calls = 0

    def _run(self, prompt: str) -> str:
        self.calls += 1
        result = run_process(
            self.argv,
            cwd=self.logs,
            timeout_s=self.timeout_s,
            env=self.env,
            stdout_path=self.logs / f"reviewer-{self.calls}.stdout.md",
            stderr_path=self.logs / f"reviewer-{self.calls}.stderr.log",
            stdin_text=prompt,
            on_tick=self.on_tick,
        )
        if not result.ok:
            what = "timed out" if result.timed_out else f"exited {result.exit_code}"
            raise ReviewError(f"reviewer {' '.join(self.argv)!r} {what}: {result.tail(800)}")
        return result.stdout_path.read_text(encoding="utf-8", errors="replace")

    def ask(self, prompt: str, files: Sequence[Path], on_sent: Callable[[str], None], inline: str | None = None) -> str:
        return self._run(inline if inline is not None else prompt)

    def repair(self, prompt: str, reply: str, repair_prompt: str, conversation: str | None) -> str:
        quoted = reply if len(reply) < 20_000 else reply[:20_000] + "\n…"
        return self._run(f"{prompt}\n\n---\nYour previous reply was:\n\n{quoted}\n\n---\n{repair_prompt}")

    def recover(self, conversation: str) -> str:
        raise ReviewError("a command reviewer has no conversation to re-read")


class ChatGPTReviewer:
    identity = "chatgpt"

    def __init__(
        self,
        policy: Policy,
        settings: Settings,
        *,
        diagnostics_dir: Path | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        from planegate.bridge import BridgeConfig, ChatGPTBridge, candidate_endpoints

        review = policy.review
        override = settings.browser_dir / "selectors.json"
        config = BridgeConfig(
            endpoints=candidate_endpoints(os.environ.get("PLANEGATE_CDP_URL"), review.cdp_urls or None),
            base_url=review.base_url,
            project=review.project,
            model_hint=review.model_hint,
            require_model=review.require_model,
            selectors_override=override if override.is_file() else None,
            end_marker=END,
            reply_timeout_s=review.timeout_s,
            thinking_timeout_s=min(review.timeout_s, 900),
        )
        self.bridge = ChatGPTBridge(config, settings.browser_dir / "leases")
        self.diagnostics_dir = diagnostics_dir
        self.on_progress = on_progress
        self.last: BridgeReply | None = None

    def _keep(self, reply: BridgeReply) -> str:
        self.last = reply
        return reply.markdown

    def ask(self, prompt: str, files: Sequence[Path], on_sent: Callable[[str], None], inline: str | None = None) -> str:
        return self._keep(
            self.bridge.ask(
                prompt,
                list(files),
                on_sent=on_sent,
                inline=inline,
                on_progress=self.on_progress,
                diagnostics_dir=self.diagnostics_dir,
            )
        )

    def repair(self, prompt: str, reply: str, repair_prompt: str, conversation: str | None) -> str:
        if conversation is None:
            raise ReviewError("the conversation URL was not recorded, so no repair prompt can be sent")
        return self._keep(
            self.bridge.follow_up(
                conversation, repair_prompt, on_progress=self.on_progress, diagnostics_dir=self.diagnostics_dir
            )
        )

    def recover(self, conversation: str) -> str:
        return self._keep(
            self.bridge.read_reply(conversation, on_progress=self.on_progress, diagnostics_dir=self.diagnostics_dir)
        )


def make_reviewer(
    policy: Policy,
    settings: Settings,
    logs: Path,
    on_tick: Callable[[float], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> Reviewer:
    kind = policy.review.reviewer
    if kind == "command":
        return CommandReviewer(policy, logs, on_tick)
    if kind == "chatgpt":
        return ChatGPTReviewer(policy, settings, diagnostics_dir=logs / "diagnostics", on_progress=on_progress)
    raise ReviewError("a manual review has no reviewer process; answer it with `planegate review submit`")
