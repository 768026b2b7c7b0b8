"""The MCP surface: tools, resources and prompts over the domain in ``planegate.tools``.

Each tool is a thin shim: typed input, one domain call, a pydantic result (so clients get
``outputSchema`` and ``structuredContent``). Domain errors become tool errors (``is_error``)
whose text names the bad value and the next step. Domain modules are imported inside the shims
so that ``planegate serve`` answers ``initialize`` before git, SQLite helpers or the browser
bridge are loaded.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, get_args

import anyio
import anyio.to_thread
from mcp.server.mcpserver import AcceptedElicitation, Context, Elicit, ElicitationResult, MCPServer, Resolve
from mcp.server.mcpserver import server as sdk_server
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.mcpserver.tools import Tool, ToolManager
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from planegate.tools.config import Settings

from . import __version__
from .schema import compact_schema

if TYPE_CHECKING:
    from planegate.tools.models import (
        AcceptResult,
        AcceptRunResult,
        CancelJobResult,
        CancelResult,
        ChecksResult,
        Decision,
        DispatchResult,
        EvidenceResult,
        FreezeResult,
        GraphResult,
        JobResult,
        Module,
        Reported,
        Requirement,
        ReviewRequestResult,
        ReviewResult,
        StartRunResult,
        StatusResult,
        TaskSpec,
    )

# The models the tools' annotations name. They are imported when the tools are built (the
# annotations are strings until then), not at start-up: ~20-35 ms that initialize does not need.
TOOL_MODELS = (
    "AcceptResult",
    "AcceptRunResult",
    "CancelJobResult",
    "CancelResult",
    "ChecksResult",
    "Decision",
    "DispatchResult",
    "EvidenceResult",
    "FreezeResult",
    "GraphResult",
    "JobResult",
    "Module",
    "Reported",
    "Requirement",
    "ReviewRequestResult",
    "ReviewResult",
    "StartRunResult",
    "StatusResult",
    "TaskSpec",
)


def load_tool_models() -> None:
    from planegate.tools import models

    globals().update({name: getattr(models, name) for name in TOOL_MODELS})


T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

INSTRUCTIONS = (
    "planegate runs a software change as a gated pipeline: freeze requirements and architecture, "
    "register a task graph, dispatch each task into its own git worktree, and accept work only with "
    "server-run evidence on the current commit, an approving review and a human's yes. "
    "Call get_status first; every answer ends with the next sensible call. Read the `orchestrate` "
    "prompt for the full runbook."
)


class HumanConfirmation(BaseModel):
    accept: bool = Field(description="accept this run")


class SignedApprovalNotice(BaseModel):
    understood: bool = Field(default=True, description="I will run the planegate approve command in my own terminal")


RunId = Annotated[str, Field(description="run id from start_run")]
TaskId = Annotated[str, Field(description="task id from the graph")]


class StrictTool(Tool):
    """A tool that refuses arguments it does not declare, before anything runs.

    pydantic's argument models ignore unknown keys, so ``get_status(run_id=...)`` used to answer
    as if no run were given; a misspelt argument must be an error the model can read and fix.
    """

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        accepted = list(self.parameters.get("properties", {}))
        unknown = sorted(set(arguments) - set(accepted))
        if unknown:
            raise ToolError(f"Error executing tool {self.name}: {unknown_arguments(self.name, unknown, accepted)}")
        return await super().run(arguments, context, convert_result)


def unknown_arguments(tool: str, unknown: list[str], accepted: list[str]) -> str:
    """Name the unknown arguments, what they probably meant, and every argument the tool takes."""
    named = []
    for name in unknown:
        guess = difflib.get_close_matches(name, accepted, n=1)
        named.append(repr(name) + (f" (did you mean {guess[0]!r}?)" if guess else ""))
    noun = "argument" if len(unknown) == 1 else "arguments"
    takes = f"accepts {', '.join(accepted)}" if accepted else "takes no arguments"
    return f"unknown {noun} {', '.join(named)}; {tool} {takes}. Nothing was done: call it again with those only"


def _tool(read_only: bool = False, destructive: bool = False, idempotent: bool = False) -> ToolAnnotations:
    return ToolAnnotations(
        read_only_hint=read_only, destructive_hint=destructive, idempotent_hint=idempotent, open_world_hint=False
    )


# Without a client message, the worker starts this long after the server is up (a restarted
# server reclaims its predecessor's jobs even when no client has connected yet).
WORKER_START_S = 0.25
# The SDK writes the answer to initialize after the middleware returns, through its writer task;
# the tools' build and the worker's start (CPU-bound threads) begin this long after, so the answer
# reaches the client first. Starting them at once made the answer ~20 % slower on a busy machine.
ANSWER_GRACE_S = 0.1
TOOL_WAIT_S = float(os.environ.get("PLANEGATE_TOOL_WAIT_S", "45"))
# Refusals are outcomes the model reads in the tool result; logging each at INFO is noise.
LOG_LEVEL: Any = os.environ.get("PLANEGATE_LOG_LEVEL", "WARNING").upper()


def plain_logging(level: Any = "INFO") -> None:
    """The SDK's logging set-up without ``rich``: importing rich for its handler is ~30 ms of every
    start, for log lines that go to a client's log file anyway."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


class LazyTools(ToolManager):
    """The tools, built on first use rather than at start-up.

    Building them (argument models, JSON schemas) is the largest part of ``build_server``;
    ``initialize`` needs none of it, and the worker's start builds them in the background.
    """

    def __init__(self, build: Callable[[], list[Tool]]) -> None:
        super().__init__()
        self._build: Callable[[], list[Tool]] | None = build
        self._build_lock = threading.Lock()

    def ready(self) -> None:
        if self._build is None:
            return
        with self._build_lock:
            if self._build is not None:
                for built in self._build():
                    self._tools[built.name] = built
                self._build = None

    def get_tool(self, name: str) -> Tool | None:
        self.ready()
        return super().get_tool(name)

    def list_tools(self) -> list[Tool]:
        self.ready()
        return super().list_tools()


class EnvHolder:
    """Opens the ledger on first use, runs this process's job worker, and closes both."""

    def __init__(self, settings: Settings | None) -> None:
        self._settings = settings
        self._env: Any = None
        self._lock = threading.Lock()
        self.worker: Any = None
        self.tools: LazyTools | None = None
        self.answered: anyio.Event | None = None  # set once the server has answered a message

    def get(self) -> Any:
        with self._lock:
            if self._env is None:
                from planegate.tools.env import Env

                self._env = Env.open(self._settings or Settings.from_env(actor="agent"))
            return self._env

    def wake_worker(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    async def run_worker(self, delay_s: float) -> None:
        """Reconcile, then run the job worker until cancelled (after ``delay_s``).

        Before that, in a thread, the tools are built, so the first ``tools/list`` does not wait
        for them, and ``get_status`` is answered once, unseen, for the runs in progress; the
        worker's first look at task heads loads the secret scanner."""
        await anyio.sleep(delay_s)
        from planegate.store import StoreBusy
        from planegate.tools.errors import PlanegateError
        from planegate.tools.execution.jobs import Worker
        from planegate.tools.execution.reconcile import reconcile
        from planegate.tools.report.status import warm_up

        if self.tools is not None:
            await anyio.to_thread.run_sync(self.tools.ready)
        env = await anyio.to_thread.run_sync(self.get)
        worker_env = env.as_actor("planegate:worker")
        try:  # so the first get_status a client sends is not the first of this process
            await anyio.to_thread.run_sync(warm_up, worker_env)
        except (PlanegateError, StoreBusy) as exc:
            logging.getLogger("planegate").info("get_status not warmed up at start-up: %s", exc)
        try:
            await anyio.to_thread.run_sync(reconcile, worker_env)
        except (PlanegateError, StoreBusy) as exc:  # the server must come up even if one repository is gone
            logging.getLogger("planegate").warning("start-up reconciliation incomplete: %s", exc)
        self.worker = Worker(worker_env)
        await self.worker.run()

    def close(self) -> None:
        with self._lock:
            if self._env is not None:
                self._env.close()
                self._env = None


def actor_of(ctx: Context | None) -> str:
    """Who is calling: the MCP client's name as it introduced itself."""
    params = getattr(getattr(ctx, "session", None), "client_params", None) if ctx is not None else None
    name = getattr(getattr(params, "client_info", None), "name", None)
    return f"agent:{name}" if name else "agent"


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one domain call; planegate's own errors become tool errors for the model to read."""
    from planegate.store import StoreBusy
    from planegate.tools.errors import PlanegateError

    try:
        return fn(*args, **kwargs)
    except (PlanegateError, StoreBusy) as exc:
        raise ToolError(str(exc)) from exc


def read_text(name: str) -> str:
    return resources.files("planegate.server").joinpath(name).read_text(encoding="utf-8")


async def wait_for_job(holder: EnvHolder, job: int, wait_s: float, ctx: Context | None) -> dict[str, Any]:
    """Poll a job until it ends or ``wait_s`` passes, reporting progress to the client.

    A queued job while workers are paused or draining will not start: that is returned at once."""
    from planegate.tools.execution.jobs import DONE, job_row, worker_control

    env = holder.get()
    started = time.monotonic()
    last_report = 0.0
    while True:
        row = await anyio.to_thread.run_sync(lambda: call(job_row, env, job))
        elapsed = time.monotonic() - started
        if row["status"] in DONE or elapsed >= wait_s:
            return row
        if row["status"] == "queued":
            control = await anyio.to_thread.run_sync(worker_control, env.store)
            if control["mode"] != "running":
                return row
        if ctx is not None and elapsed - last_report >= 2.0:
            last_report = elapsed
            await ctx.report_progress(round(elapsed, 1), None, row["progress"] or f"job {job} is {row['status']}")
        await anyio.sleep(0.05 if elapsed < 5 else 0.25)


@dataclass(frozen=True)
class ApprovalAsk:
    """The question for the human, and the head and mode it is about."""

    mode: str
    head: str
    question: str


def approval_ask(run: str, ctx: Context) -> ApprovalAsk | None:
    """What to ask the user, when their approval is the one gate left and their client can be asked.

    Writes the draft report first, so the question can point at it. The question has no clock in
    it: asked twice about the same head, it reads the same.
    """
    from planegate.tools.errors import PlanegateError
    from planegate.tools.gates.approval_view import approval_request
    from planegate.tools.gates.release import awaiting_human
    from planegate.tools.report.report import write_report

    capabilities = ctx.client_capabilities
    if capabilities is None or capabilities.elicitation is None:
        return None
    holder: EnvHolder = ctx.mcp_server.env_holder  # type: ignore[attr-defined]
    try:
        env = holder.get()
        pending = awaiting_human(env, run)
        if pending is None:
            return None
        files = write_report(env, run, run_gates=pending.gates)
        mode, question = approval_request(env, pending.run_row, pending.head, pending.gates, str(files.markdown))
    except PlanegateError:
        return None
    return ApprovalAsk(mode=mode, head=pending.head, question=question)


def ask_human(ask: Annotated[ApprovalAsk | None, Resolve(approval_ask)]) -> Elicit[HumanConfirmation] | None:
    """Interactive mode: the user's answer in the client is the approval."""
    return Elicit(ask.question, HumanConfirmation) if ask is not None and ask.mode == "interactive" else None


def tell_human(ask: Annotated[ApprovalAsk | None, Resolve(approval_ask)]) -> Elicit[SignedApprovalNotice] | None:
    """Signed mode: the client can only show the user what to approve and the command that signs it."""
    return Elicit(ask.question, SignedApprovalNotice) if ask is not None and ask.mode == "signed" else None


def build_server(settings: Settings | None = None, *, worker_delay_s: float | None = None) -> MCPServer:
    """The planegate MCP server.

    Its job worker starts ``ANSWER_GRACE_S`` after the server has answered its first message
    (``initialize``), so that answer never shares the CPU with the worker's start, or ``WORKER_START_S`` after the
    server is up if no message comes; ``worker_delay_s`` fixes the delay instead.
    """
    holder = EnvHolder(settings)

    async def first_answer(ctx: Any, call_next: Any) -> Any:
        try:
            return await call_next(ctx)
        finally:
            if holder.answered is not None:
                holder.answered.set()

    async def start_worker() -> None:
        if worker_delay_s is None:
            assert holder.answered is not None
            with anyio.move_on_after(WORKER_START_S):
                await holder.answered.wait()
            await anyio.sleep(ANSWER_GRACE_S)
            await holder.run_worker(0)
        else:
            await holder.run_worker(worker_delay_s)

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[None]:
        holder.answered = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(start_worker)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
        holder.close()

    declared: list[tuple[Callable[..., Any], ToolAnnotations]] = []

    def tool(read_only: bool = False, destructive: bool = False, idempotent: bool = False) -> Callable[[F], F]:
        def register(fn: F) -> F:
            declared.append((fn, _tool(read_only, destructive, idempotent)))
            return fn

        return register

    def build_tools() -> list[Tool]:
        load_tool_models()
        tools: list[Tool] = []
        for fn, hints in declared:
            built = StrictTool.from_function(fn, annotations=hints)
            built.parameters = {**(compact_schema(built.parameters) or {}), "additionalProperties": False}
            built.fn_metadata.output_schema = compact_schema(built.fn_metadata.output_schema, output=True)
            tools.append(built)
        return tools

    def env(ctx: Context | None = None) -> Any:
        return holder.get().as_actor(actor_of(ctx))

    @tool()
    def start_run(
        repo: Annotated[str, Field(description="path of the git repository")],
        goal: Annotated[str, Field(description="what the change must achieve")],
        ctx: Context,
        base_ref: Annotated[str, Field(description="branch, tag or sha to start from")] = "HEAD",
    ) -> StartRunResult:
        """Open a run on a repository: records the base commit and creates planegate/<run>/integration."""
        from planegate.tools.control.runs import start_run as start

        return call(start, env(ctx), repo, goal, base_ref)

    @tool(idempotent=True)
    def freeze_requirements(
        run: RunId,
        requirements: list[Requirement],
        ctx: Context,
        amend_reason: Annotated[str | None, Field(description="required to change a frozen set")] = None,
    ) -> FreezeResult:
        """Freeze the run's requirements (versioned, content-hashed); a later call amends them and needs a reason."""
        from planegate.tools.control.runs import freeze_requirements as freeze

        return call(freeze, env(ctx), run, requirements, amend_reason)

    @tool(idempotent=True)
    def freeze_architecture(
        run: RunId,
        modules: list[Module],
        ctx: Context,
        decisions: list[Decision] | None = None,
        amend_reason: Annotated[str | None, Field(description="required to change a frozen architecture")] = None,
    ) -> FreezeResult:
        """Freeze modules (owned path globs, dependencies) and design decisions; needs frozen requirements."""
        from planegate.tools.control.runs import freeze_architecture as freeze

        return call(freeze, env(ctx), run, modules, decisions or [], amend_reason)

    @tool(destructive=True, idempotent=True)
    def register_graph(run: RunId, tasks: list[TaskSpec], ctx: Context) -> GraphResult:
        """Validate and store the task DAG; returns waves and requirement coverage. Replaces it until a dispatch."""
        from planegate.tools.control.graph import register_graph as register

        return call(register, env(ctx), run, tasks)

    @tool(read_only=True, idempotent=True)
    def get_status(
        ctx: Context,
        run: Annotated[str | None, Field(description="omit to list runs")] = None,
    ) -> StatusResult:
        """Runs newest first; or one run's stage, tasks, blockers, evidence, gates, risks and the next action."""
        from planegate.tools.report.status import get_status as status

        # Never waits for git: this process's worker computes each head's git facts when it moves.
        return call(status, env(ctx), run, wait_for_git=False)

    @tool()
    def dispatch_task(
        run: RunId,
        task: TaskId,
        ctx: Context,
        executor: Annotated[
            Literal["agent", "command", "codex"], Field(description="agent: you work in the worktree yourself")
        ] = "agent",
    ) -> DispatchResult:
        """Create the task's worktree and branch from the integration head, write its envelope, take a lease."""
        from planegate.tools.execution.dispatch import dispatch_task as dispatch

        result = call(dispatch, env(ctx), run, task, executor)
        holder.wake_worker()
        return result

    @tool()
    def record_evidence(
        run: RunId,
        task: TaskId,
        kind: Annotated[str, Field(description="e.g. test, lint, manual")],
        # A plain string whose schema lists the labels: "direct" must reach the domain's refusal,
        # which explains why it is reserved, instead of a validation dump.
        label: Annotated[
            str, Field(description="how you know; never counted", json_schema_extra={"enum": list(get_args(Reported))})
        ],
        summary: str,
        ctx: Context,
        command: str | None = None,
        exit_code: int | None = None,
        artifacts: Annotated[list[str] | None, Field(description="files inside the worktree")] = None,
    ) -> EvidenceResult:
        """Record evidence you observed. Shown in status, never counted by a gate: only run_checks counts."""
        from planegate.tools.control.evidence import record_evidence as record

        return call(record, env(ctx), run, task, kind, label, summary, command, exit_code, artifacts)

    @tool(idempotent=True)
    async def run_checks(
        run: RunId,
        ctx: Context,
        task: Annotated[str | None, Field(description="omit to check the integration head")] = None,
        checks: Annotated[list[str] | None, Field(description="default: every policy check")] = None,
    ) -> ChecksResult:
        """The server runs the policy's checks on the head commit and records direct evidence.

        Waits up to ~45 s with progress, then returns a job id for get_job."""
        from planegate.tools.execution.checks import checks_result, start_checks

        job = await anyio.to_thread.run_sync(lambda: call(start_checks, env(ctx), run, task, checks))
        holder.wake_worker()
        await wait_for_job(holder, job, TOOL_WAIT_S, ctx)
        return await anyio.to_thread.run_sync(lambda: call(checks_result, holder.get(), job))

    @tool(read_only=True, idempotent=True)
    async def get_job(
        job: int,
        ctx: Context,
        wait_seconds: Annotated[float, Field(ge=0, le=45, description="wait for it to finish, at most 45")] = 30,
    ) -> JobResult:
        """A job's state (checks, executor, review); waits up to wait_seconds for it to finish."""
        from planegate.tools.execution.jobview import job_result

        await wait_for_job(holder, job, wait_seconds, ctx)
        return await anyio.to_thread.run_sync(lambda: call(job_result, holder.get(), job))

    @tool(destructive=True)
    def accept_task(run: RunId, task: TaskId, ctx: Context) -> AcceptResult:
        """Evaluate every gate on the head; merge into the integration branch, tag a checkpoint, unlock dependents."""
        from planegate.tools.gates.accept import accept_task as accept

        return call(accept, env(ctx), run, task)

    @tool()
    def request_review(
        run: RunId,
        ctx: Context,
        task: Annotated[str | None, Field(description="the task to review")] = None,
        release: Annotated[bool, Field(description="review base..integration once all tasks are done")] = False,
    ) -> ReviewRequestResult:
        """Send the task's verified change (or the whole run) to the second-model reviewer; returns a review id."""
        from planegate.tools.review.review import request_review as request

        result = call(request, env(ctx), run, task, release)
        holder.wake_worker()
        return result

    @tool(read_only=True, idempotent=True)
    async def get_review(
        review: str,
        ctx: Context,
        wait_seconds: Annotated[float, Field(ge=0, le=45, description="wait for it to finish, at most 45")] = 30,
    ) -> ReviewResult:
        """A review's state, verdict and findings; waits up to wait_seconds while it runs, then says to call again."""
        from planegate.tools.review.review import pick_up_pending, review_result

        # A pending review (sent, reply still coming) whose re-read is due gets it queued here.
        row = await anyio.to_thread.run_sync(lambda: call(pick_up_pending, holder.get(), review))
        if row["job_id"] is not None and row["status"] in ("queued", "running", "pending"):
            await wait_for_job(holder, row["job_id"], wait_seconds, ctx)
        return await anyio.to_thread.run_sync(lambda: call(review_result, holder.get(), review))

    @tool(destructive=True)
    def accept_run(
        run: RunId,
        ctx: Context,
        ask: Annotated[ApprovalAsk | None, Resolve(approval_ask)],
        human: Annotated[ElicitationResult[HumanConfirmation], Resolve(ask_human)],
        notice: Annotated[ElicitationResult[SignedApprovalNotice], Resolve(tell_human)],
    ) -> AcceptRunResult:
        """Check the run gates; when only human approval is missing, ask the user in the client. Writes the report."""
        from planegate.tools.config import os_user
        from planegate.tools.gates.release import approve
        from planegate.tools.report.acceptance import accept_run as accept

        if ask is not None and ask.mode == "signed":
            # Whatever the client answered: in signed mode only a signature made with the human's key approves.
            raise ToolError(
                f'run {run!r} needs a signed human approval ([approval] mode = "signed"); an answer in the client '
                f"cannot give it. The human runs `planegate approve {run}` in their own terminal (it signs with "
                "their SSH key), then call accept_run again"
            )
        if ask is not None and isinstance(human, AcceptedElicitation) and human.data is not None:
            if not human.data.accept:
                raise ToolError(
                    f"the user did not accept run {run!r}; it stays unaccepted. A human can approve "
                    f"later with `planegate approve {run}`"
                )
            call(approve, env(ctx), run, f"{os_user()} ({actor_of(ctx)})", "elicitation", expected_head=ask.head)
        elif not isinstance(human, AcceptedElicitation):
            raise ToolError(
                f"the user {human.action}d the confirmation; run {run!r} stays unaccepted. A human can "
                f"approve with `planegate approve {run}`, then call accept_run again"
            )
        return call(accept, env(ctx), run)

    @tool(destructive=True, idempotent=True)
    def cancel_job(
        job: int,
        reason: Annotated[str, Field(description="why; recorded")],
        ctx: Context,
    ) -> CancelJobResult:
        """Cancel a queued or running job: stops its processes (at once on this host) and records it."""
        from planegate.tools.execution.jobs import cancel_job as cancel

        return call(cancel, env(ctx), job, reason)

    @tool(destructive=True, idempotent=True)
    def cancel_task(run: RunId, task: TaskId, reason: str, ctx: Context) -> CancelResult:
        """Cancel a task with a reason: releases its lease and stops its jobs; its worktree is kept."""
        from planegate.tools.execution.dispatch import cancel_task as cancel

        return call(cancel, env(ctx), run, task, reason)

    sdk_logging = sdk_server.configure_logging
    sdk_server.configure_logging = plain_logging
    try:
        server: MCPServer = MCPServer(
            "planegate",
            title="planegate",
            version=__version__,
            instructions=INSTRUCTIONS,
            lifespan=lifespan,
            log_level=LOG_LEVEL,
        )
    finally:
        sdk_server.configure_logging = sdk_logging
    holder.tools = LazyTools(build_tools)
    server._tool_manager = holder.tools  # the SDK takes built tools only; these are built on first use
    server.middleware.append(first_answer)
    server.env_holder = holder  # type: ignore[attr-defined]

    @server.resource("planegate://runs/{run}/tasks/{task}", name="task", mime_type="text/markdown")
    def task_resource(run: str, task: str) -> str:
        """A task's envelope: goal, requirements, architecture slice, scope, checks, budget, how to finish."""
        from planegate.tools.errors import PlanegateError
        from planegate.tools.execution.envelope import render_envelope

        try:
            return render_envelope(holder.get(), run, task)
        except PlanegateError as exc:
            raise ResourceError(str(exc)) from exc

    @server.resource("planegate://runs", name="runs", mime_type="text/markdown")
    def runs_resource() -> str:
        """The runs, newest first."""
        from planegate.tools.report.render import runs_markdown

        return runs_markdown(holder.get())

    @server.resource("planegate://runs/{run}", name="run", mime_type="text/markdown")
    def run_resource(run: str) -> str:
        """One run's status in markdown, with its task graph as a mermaid diagram."""
        from planegate.tools.errors import PlanegateError
        from planegate.tools.report.render import run_markdown

        try:
            return run_markdown(holder.get(), run)
        except PlanegateError as exc:
            raise ResourceError(str(exc)) from exc

    @server.resource("planegate://runs/{run}/events", name="events", mime_type="text/markdown")
    def events_resource(run: str) -> str:
        """The run's latest events (the audit trail), newest first."""
        from planegate.tools.errors import PlanegateError
        from planegate.tools.report.render import events_markdown

        try:
            return events_markdown(holder.get(), run)
        except PlanegateError as exc:
            raise ResourceError(str(exc)) from exc

    @server.prompt()
    def implement_task(run: str, task: str) -> str:
        """What a worker is told: the task's envelope and how to work in its worktree."""
        from planegate.tools.errors import PlanegateError
        from planegate.tools.execution.envelope import render_envelope

        try:
            envelope = render_envelope(holder.get(), run, task)
            worktree = holder.get().task_row(run, task)["worktree"]
        except PlanegateError as exc:
            raise ValueError(str(exc)) from exc
        where = f"in the worktree {worktree}" if worktree else "once dispatch_task has created its worktree"
        return (
            f"You implement one task of a larger change, {where}. Change only what the scope allows, add tests "
            "that fail without your change, commit on the task branch, then call run_checks and fix what fails. "
            "Do not claim a check passed unless run_checks says so.\n\n" + envelope
        )

    @server.prompt()
    def review_task(review: str) -> str:
        """The full review prompt of a requested review (packet and instructions), e.g. to answer it by hand."""
        from planegate.tools.errors import PlanegateError
        from planegate.tools.review.review import review_row

        try:
            row = review_row(holder.get(), review)
        except PlanegateError as exc:
            raise ValueError(str(exc)) from exc
        path = holder.get().settings.artifacts / row["run_id"] / (row["task_id"] or "_run") / review / "prompt.md"
        return path.read_text(encoding="utf-8")

    @server.prompt()
    def orchestrate(goal: str = "") -> str:
        """The runbook an orchestrating agent follows to take a change through planegate."""
        text = read_text("runbook.md")
        return text + (f"\n\nThe change to orchestrate: {goal}\n" if goal else "")

    return server
