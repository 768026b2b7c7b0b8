"""The MCP surface: tools, resources and prompts over the domain in ``planegate.tools``.

Each tool is a thin shim: typed input, one domain call, a pydantic result (so clients get
``outputSchema`` and ``structuredContent``). Domain errors become tool errors (``is_error``)
whose text names the bad value and the next step. Domain modules are imported inside the shims
so that ``planegate serve`` answers ``initialize`` before git, SQLite helpers or the browser
bridge are loaded.
"""

from __future__ import annotations

import difflib
import functools
import json
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
from mcp.server.apps import APP_MIME_TYPE, Apps
from mcp.server.mcpserver import AcceptedElicitation, Context, Elicit, ElicitationResult, MCPServer, Resolve
from mcp.server.mcpserver import server as sdk_server
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.mcpserver.resources import FunctionResource, ResourceTemplate
from mcp.server.mcpserver.tools import Tool, ToolManager
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, InputRequiredResult, Result, ToolAnnotations
from pydantic import BaseModel, Field, PrivateAttr

from planegate.tools.config import Settings
from planegate.tools.errors import DISPOSITIONS

from . import __version__, tasks
from .errors import Refusal, refusal_for, refusal_result, screen_arguments
from .render import reply
from .schema import compact_schema, described_elsewhere

if TYPE_CHECKING:
    from planegate.tools.models import (
        AbandonResult,
        AcceptResult,
        AcceptRunResult,
        AmendResult,
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
        PublishResult,
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
    "AbandonResult",
    "AcceptResult",
    "AcceptRunResult",
    "AmendResult",
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
    "PublishResult",
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
    "prompt for the full runbook. Handles: `run` is the id start_run returns and `task` an id from your "
    "graph; both last as long as the run. Job ids (run_checks, dispatch_task) and review ids "
    "(request_review) stay valid as long as the ledger. Links (planegate://runs/...) are read with "
    "resources/read for as long as the ledger keeps the file; each read is checked against its recorded "
    "sha256. A client that declares the MCP tasks extension gets a task id instead of waiting; it maps to "
    "one job or review and is kept at least 30 days. A refusal, and a job or review that did not succeed, "
    f"carries a `disposition` to branch on ({', '.join(DISPOSITIONS)}); the message and next_step say what to do."
)


class HumanConfirmation(BaseModel):
    accept: bool = Field(description="accept this run")


class SignedApprovalNotice(BaseModel):
    understood: bool = Field(default=True, description="I will run the planegate approve command in my own terminal")


# Every tool takes these; what they are is said once, in the server's instructions.
RunId = str
TaskId = str


class ReplyMetadata(FuncMetadata):
    """How planegate's tools answer (``render.reply``): a short text, the result as structured
    content, and a resource link for each big payload, which ``tools.report.links`` attaches to
    the result (off the event loop) before it is rendered."""

    _tool: str = PrivateAttr(default="")
    _holder: Any = PrivateAttr(default=None)

    @classmethod
    def replacing(cls, tool: str, metadata: FuncMetadata, holder: Any) -> ReplyMetadata:
        made = cls(
            arg_model=metadata.arg_model,
            output_schema=metadata.output_schema,
            output_model=metadata.output_model,
            wrap_output=metadata.wrap_output,
        )
        made._tool, made._holder = tool, holder
        return made

    async def call_fn(
        self,
        fn: Callable[..., Any],
        fn_is_async: bool,
        arguments: dict[str, Any],
        arguments_to_pass_directly: dict[str, Any] | None = None,
    ) -> Any:
        result = await super().call_fn(fn, fn_is_async, arguments, arguments_to_pass_directly)
        linkable = isinstance(result, BaseModel) and "links" in type(result).model_fields
        if linkable and not isinstance(result, Result) and self._holder is not None:
            from planegate.tools.report.links import attach_links

            await anyio.to_thread.run_sync(attach_links, self._holder.get(), result)
        return result

    def convert_result(self, result: Any) -> CallToolResult | InputRequiredResult:
        if isinstance(result, tasks.CreateTaskResult):
            return result  # type: ignore[return-value]  # the extension's claimed shape goes out as is
        if isinstance(result, BaseModel) and not isinstance(result, Result) and self.output_model is not None:
            adapter = self._output_adapter(self.output_model)
            validated = adapter.validate_python(result, by_alias=True, by_name=True)
            return reply(self._tool, validated, validated.model_dump(mode="json", by_alias=True))
        return super().convert_result(result)


class StrictTool(Tool):
    """A tool that refuses arguments it does not declare, before anything runs, and whose every
    failure reads as planegate's own (``errors``): a disposition and a message, never a bare
    "Error executing tool" or a traceback.

    pydantic's argument models ignore unknown keys, so ``get_status(run_id=...)`` used to answer
    as if no run were given; a misspelt argument must be an error the model can read and fix.
    """

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        accepted = list(self.parameters.get("properties", {}))
        unknown = sorted(set(arguments) - set(accepted))
        if unknown:
            return refusal_result(Refusal(unknown_arguments(self.name, unknown, accepted), "bad_input"))
        screened = screen_arguments(self.name, arguments)
        if screened is not None:
            return refusal_result(screened)
        try:
            return await super().run(arguments, context, convert_result)
        except MCPError:
            raise
        except Exception as exc:  # noqa: BLE001 - the top of a tool call: every failure becomes a readable answer
            holder = getattr(getattr(context, "mcp_server", None), "env_holder", None)
            store = holder.opened_store() if holder is not None else None
            answer = functools.partial(
                refusal_for, self.name, exc, self.parameters, store, actor_of(context), arguments
            )
            return refusal_result(await anyio.to_thread.run_sync(answer))


def unknown_arguments(tool: str, unknown: list[str], accepted: list[str]) -> str:
    """Name the unknown arguments, what they probably meant, and every argument the tool takes."""
    named = []
    for name in unknown:
        guess = difflib.get_close_matches(name, accepted, n=1)
        named.append(repr(name) + (f" (did you mean {guess[0]!r}?)" if guess else ""))
    noun = "argument" if len(unknown) == 1 else "arguments"
    takes = f"accepts {', '.join(accepted)}" if accepted else "takes no arguments"
    return f"unknown {noun} {', '.join(named)}; {tool} {takes}. Nothing was done: call it again with those only"


def _tool(
    read_only: bool = False, destructive: bool = False, idempotent: bool = False, open_world: bool = False
) -> ToolAnnotations:
    """The hints that differ from the spec's defaults (not read-only, destructive, not idempotent,
    open world): the rest would be bytes in every ``tools/list`` saying what a client assumes."""
    return ToolAnnotations(
        read_only_hint=True if read_only else None,
        destructive_hint=False if not read_only and not destructive else None,
        idempotent_hint=True if idempotent else None,
        open_world_hint=None if open_world else False,
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


WORKER_RETRY_S = (1.0, 60.0)  # first and longest wait before the worker tries an unusable ledger again


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
    """Opens the ledger on first use, runs this process's job worker, and closes both.

    A ledger that cannot be opened (read-only, disk full, corrupt) is not kept: every call tries
    again and answers why it cannot, so the server stays up and recovers once the file is fixed.
    The worker likewise waits and retries, each wait twice the last up to a minute, and logs a
    cause once rather than at every attempt.
    """

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

    def opened_store(self) -> Any:
        """The ledger if it is open (for recording an incident), without trying to open it."""
        env = self._env
        return None if env is None else env.store

    def wake_worker(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    async def run_worker(self, delay_s: float) -> None:
        """Reconcile, then run the job worker until cancelled (after ``delay_s``).

        Before that, in a thread, the tools are built, so the first ``tools/list`` does not wait
        for them, and ``get_status`` is answered once, unseen, for the runs in progress; the
        worker's first look at task heads loads the secret scanner. Nothing here may end the
        server: a ledger it cannot use, or a failure of the worker itself, is logged and tried
        again later."""
        await anyio.sleep(delay_s)
        from planegate.store import StoreError, record_incident
        from planegate.tools.errors import PlanegateError
        from planegate.tools.execution.jobs import Worker
        from planegate.tools.execution.reconcile import reconcile
        from planegate.tools.report.status import warm_up

        if self.tools is not None:
            await anyio.to_thread.run_sync(self.tools.ready)
        log = logging.getLogger("planegate")
        wait_s, last_said = WORKER_RETRY_S[0], ""
        while True:
            try:
                env = await anyio.to_thread.run_sync(self.get)
                worker_env = env.as_actor("planegate:worker")
                try:  # so the first get_status a client sends is not the first of this process
                    await anyio.to_thread.run_sync(warm_up, worker_env)
                except (PlanegateError, StoreError) as exc:
                    log.info("get_status not warmed up at start-up: %s", exc)
                try:
                    await anyio.to_thread.run_sync(reconcile, worker_env)
                except (PlanegateError, StoreError) as exc:  # the server must come up even if one repository is gone
                    log.warning("start-up reconciliation incomplete: %s", exc)
                self.worker = Worker(worker_env)
                await self.worker.run()
                return
            except StoreError as exc:
                said = str(exc)
                if said != last_said:
                    log.warning("job worker waiting for the ledger (it retries, at most a minute apart): %s", said)
                    last_said = said
            except Exception as exc:  # noqa: BLE001 - the worker's top level: a bug is recorded, the server stays up
                note = functools.partial(record_incident, self.opened_store(), exc, place="job worker")
                await anyio.to_thread.run_sync(note)
            self.worker = None
            await anyio.sleep(wait_s)
            wait_s = min(wait_s * 2, WORKER_RETRY_S[1])

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
    """Run one domain call; planegate's own errors and the ledger's become tool errors (with their
    disposition) for the model to read. Anything else is left to ``StrictTool`` (an incident)."""
    from planegate.store import StoreError
    from planegate.tools.errors import PlanegateError, disposition_of

    try:
        return fn(*args, **kwargs)
    except (PlanegateError, StoreError) as exc:
        raise Refusal(str(exc), disposition_of(exc)) from exc


def gated(tool: str, fn: Callable[..., T], env: Any, run: str, *args: Any) -> T:
    """An acceptance (``call``) whose refusal by its gates is recorded as a ``gate.refused`` event
    (run metrics, and the notifier's cue that a human's approval is awaited) before it is answered."""
    from planegate.tools.gates.gates import GatesUnmet
    from planegate.tools.report.stats import record_refusal

    try:
        return call(fn, env, run, *args)
    except Refusal as exc:
        if isinstance(exc.__cause__, GatesUnmet):
            gates = [g.gate for g in exc.__cause__.unmet]
            record_refusal(env, tool, run, args[0] if args else None, gates, exc.disposition)
        raise


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
    _notify_approval(env, pending)
    return ApprovalAsk(mode=mode, head=pending.head, question=question)


def _notify_approval(env: Any, pending: Any) -> None:
    """Tell the human (once per integration head) that the client is asking for their approval."""
    from planegate.store import StoreError
    from planegate.tools.errors import PlanegateError
    from planegate.tools.report.notify import approval_notice_for, raise_notice

    try:
        raise_notice(env, approval_notice_for(pending))
    except (PlanegateError, StoreError) as exc:  # the question is asked either way
        logging.getLogger("planegate").warning("approval notification for run %s not queued: %s", pending.run, exc)


def ask_human(ask: Annotated[ApprovalAsk | None, Resolve(approval_ask)]) -> Elicit[HumanConfirmation] | None:
    """Interactive mode: the user's answer in the client is the approval."""
    return Elicit(ask.question, HumanConfirmation) if ask is not None and ask.mode == "interactive" else None


def tell_human(ask: Annotated[ApprovalAsk | None, Resolve(approval_ask)]) -> Elicit[SignedApprovalNotice] | None:
    """Signed mode: the client can only show the user what to approve and the command that signs it."""
    return Elicit(ask.question, SignedApprovalNotice) if ask is not None and ask.mode == "signed" else None


RUN_VIEW_URI = "ui://planegate/run"


def run_view_page(env: Any) -> str:
    """The MCP App page, holding the newest run's view until the host hands it a get_status result."""
    from planegate.tools.report.view import newest_run, run_view, view_page

    run = newest_run(env)
    return view_page(run_view(env, run, wait_for_git=False) if run else None, mode="app")


class ArtifactTemplate(ResourceTemplate):
    """The artifact template: each read is served with the MIME type its artifact's name says
    (a plain template has one fixed type for every read)."""

    async def create_resource(self, uri: str, params: dict[str, Any], context: Any) -> Any:
        content, mime = await anyio.to_thread.run_sync(lambda: self.fn(**params))
        return FunctionResource(
            uri=uri, name=self.name, description=self.description, mime_type=mime, fn=lambda: content
        )


def artifact_content(holder: EnvHolder, run: str, artifact: str) -> tuple[str | bytes, str]:
    """An artifact the tools link to (check log, review packet or reply, executor output), re-hashed
    against the sha256 the ledger recorded: text for a text type, bytes otherwise."""
    from planegate.tools.errors import PlanegateError
    from planegate.tools.report.links import is_text, read_artifact

    try:
        data, mime = read_artifact(holder.get(), run, artifact)
    except PlanegateError as exc:
        raise ResourceError(str(exc)) from exc
    if is_text(mime):
        try:
            return data.decode("utf-8"), mime
        except UnicodeDecodeError:
            return data, "application/octet-stream"
    return data, mime


def task_finishers() -> dict[str, tasks.Finisher]:
    """For each tool that can answer with an MCP task: its final result once the work ended, the
    same answer the tool gives when called again then (links attached, long texts cut)."""

    def linked(finish: Callable[[Any, dict[str, Any]], BaseModel]) -> tasks.Finisher:
        def run(env: Any, row: dict[str, Any]) -> BaseModel:
            from planegate.tools.report.links import attach_links

            result: BaseModel = attach_links(env, call(finish, env, row))
            return result

        return run

    def checks(env: Any, row: dict[str, Any]) -> BaseModel:
        from planegate.tools.report.feedback import checks_feedback

        return checks_feedback(env, row["job_id"])

    def job(env: Any, row: dict[str, Any]) -> BaseModel:
        from planegate.tools.report.feedback import job_feedback

        return job_feedback(env, row["job_id"])

    def review(env: Any, row: dict[str, Any]) -> BaseModel:
        from planegate.tools.review.review import review_result

        return review_result(env, row["review_id"])

    def requested(env: Any, row: dict[str, Any]) -> BaseModel:
        from planegate.tools.review.review import review_request_result, review_result

        ended = review_result(env, row["review_id"])
        result = review_request_result(env, row["review_id"])
        result.verdict, result.next_step = ended.verdict, ended.next_step
        return result

    def dispatched(env: Any, row: dict[str, Any]) -> BaseModel:
        from planegate.tools.execution.jobview import job_result

        result = DispatchResult.model_validate_json(row["seed"])
        ended = job_result(env, row["job_id"])
        result.job_state, result.next_step = ended.state, ended.next_step
        return result

    return {
        "run_checks": linked(checks),
        "get_job": linked(job),
        "get_review": linked(review),
        "request_review": linked(requested),
        "dispatch_task": linked(dispatched),
    }


def build_server(settings: Settings | None = None, *, worker_delay_s: float | None = None) -> MCPServer:
    """The planegate MCP server.

    Its job worker starts ``ANSWER_GRACE_S`` after the server has answered its first message
    (``initialize``), so that answer never shares the CPU with the worker's start, or
    ``WORKER_START_S`` after the server is up if no message comes; ``worker_delay_s`` fixes the
    delay instead.
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

    declared: list[tuple[Callable[..., Any], ToolAnnotations, dict[str, str] | None]] = []

    def tool(
        read_only: bool = False,
        destructive: bool = False,
        idempotent: bool = False,
        open_world: bool = False,
        described_in: dict[str, str] | None = None,
    ) -> Callable[[F], F]:
        def register(fn: F) -> F:
            declared.append((fn, _tool(read_only, destructive, idempotent, open_world), described_in))
            return fn

        return register

    def build_tools() -> list[Tool]:
        load_tool_models()
        tools: list[Tool] = []
        for fn, hints, described_in in declared:
            built = StrictTool.from_function(fn, annotations=hints)
            built.description = " ".join(built.description.split())  # a docstring's indentation is not content
            parameters = built.parameters
            if described_in:
                parameters = described_elsewhere(parameters, described_in)
            built.parameters = {**(compact_schema(parameters) or {}), "additionalProperties": False}
            built.fn_metadata = ReplyMetadata.replacing(built.name, built.fn_metadata, holder)
            built.fn_metadata.output_schema = compact_schema(built.fn_metadata.output_schema, output=True)
            if built.name == "get_status":
                built.meta = {"ui": {"resourceUri": RUN_VIEW_URI}}
            tools.append(built)
        return tools

    def env(ctx: Context | None = None) -> Any:
        return holder.get().as_actor(actor_of(ctx))

    def render(name: str, result: BaseModel) -> CallToolResult:
        assert holder.tools is not None
        built = holder.tools.get_tool(name)
        assert built is not None, name
        converted = built.fn_metadata.convert_result(result)
        assert isinstance(converted, CallToolResult)
        return converted

    task_ext = tasks.Tasks(holder.get, task_finishers(), render)

    async def as_task(ctx: Context, **created: Any) -> Any:
        """The task handle for work already started (only when this request asked for tasks)."""
        return await anyio.to_thread.run_sync(lambda: task_ext.create(env(ctx), **created))

    @tool()
    def start_run(
        repo: Annotated[str, Field(description="path of the git repository")],
        goal: str,
        ctx: Context,
        base_ref: Annotated[str, Field(description="branch, tag or sha to start from")] = "HEAD",
    ) -> StartRunResult:
        """Open a run: record the base commit and create the branch planegate/<run>/integration."""
        from planegate.tools.control.runs import start_run as start

        return call(start, env(ctx), repo, goal, base_ref)

    @tool(idempotent=True)
    def freeze_requirements(
        run: RunId,
        requirements: list[Requirement],
        ctx: Context,
        amend_reason: Annotated[str | None, Field(description="required to change a frozen set")] = None,
    ) -> FreezeResult:
        """Freeze the run's requirements (versioned, hashed); calling again amends them, with a reason."""
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
        """Validate and store the task DAG; returns waves and requirement coverage. Replaceable until a dispatch."""
        from planegate.tools.control.graph import register_graph as register

        return call(register, env(ctx), run, tasks)

    @tool(read_only=True, idempotent=True)
    def get_status(
        ctx: Context,
        run: Annotated[str | None, Field(description="omit to list runs")] = None,
        include_abandoned: bool = False,
    ) -> StatusResult:
        """Runs newest first; or one run's stage, tasks, blockers, evidence, gates, risks and the next action."""
        from planegate.tools.report.status import get_status as status

        # Never waits for git: this process's worker computes each head's git facts when it moves.
        return call(status, env(ctx), run, include_abandoned, wait_for_git=False)

    @tool()
    def dispatch_task(
        run: RunId,
        task: TaskId,
        ctx: Context,
        executor: Annotated[
            Literal["agent", "command", "codex"], Field(description="agent: you work in the worktree yourself")
        ] = "agent",
    ) -> DispatchResult:
        """Make the task's worktree and branch at the integration head, write its envelope, take a lease
        (run_checks renews it); command/codex executors run as jobs."""
        from planegate.tools.execution.dispatch import dispatch_task as dispatch

        result = call(dispatch, env(ctx), run, task, executor)
        holder.wake_worker()
        if result.job is not None and tasks.requested(ctx):
            return task_ext.create(env(ctx), tool="dispatch_task", run=run, job=result.job, seed=result)
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
        Waits up to ~45 s, then returns a job id for get_job."""
        from planegate.tools.execution.checks import start_checks
        from planegate.tools.report.feedback import checks_feedback

        job = await anyio.to_thread.run_sync(lambda: call(start_checks, env(ctx), run, task, checks))
        holder.wake_worker()
        if tasks.requested(ctx):
            return await as_task(ctx, tool="run_checks", run=run, job=job)
        await wait_for_job(holder, job, TOOL_WAIT_S, ctx)
        return await anyio.to_thread.run_sync(lambda: call(checks_feedback, holder.get(), job))

    @tool(read_only=True, idempotent=True)
    async def get_job(
        job: int,
        ctx: Context,
        wait_seconds: Annotated[float, Field(ge=0, le=45)] = 30,
    ) -> JobResult:
        """A job's state (checks, executor, review); waits up to wait_seconds for it to finish."""
        from planegate.tools.execution.jobview import job_result
        from planegate.tools.report.feedback import job_feedback

        if tasks.requested(ctx):
            row = await anyio.to_thread.run_sync(lambda: call(job_result, holder.get(), job))
            if row.state in ("queued", "running"):
                return await as_task(ctx, tool="get_job", run=row.run, job=job)
        await wait_for_job(holder, job, wait_seconds, ctx)
        return await anyio.to_thread.run_sync(lambda: call(job_feedback, holder.get(), job))

    @tool(destructive=True)
    def accept_task(run: RunId, task: TaskId, ctx: Context) -> AcceptResult:
        """Evaluate every gate on the head; merge into the integration branch, tag a checkpoint, unlock dependents."""
        from planegate.tools.gates.accept import accept_task as accept

        return gated("accept_task", accept, env(ctx), run, task)

    @tool()
    def request_review(
        run: RunId,
        ctx: Context,
        task: str | None = None,
        release: Annotated[bool, Field(description="review base..integration once all tasks are done")] = False,
    ) -> ReviewRequestResult:
        """Send the task's verified change (or the whole run) to the second-model reviewer; returns a review id."""
        from planegate.tools.review.review import request_review as request

        result = call(request, env(ctx), run, task, release)
        holder.wake_worker()
        if tasks.requested(ctx):
            return task_ext.create(env(ctx), tool="request_review", run=run, review=result.review, seed=result)
        return result

    @tool(read_only=True, idempotent=True)
    async def get_review(
        review: str,
        ctx: Context,
        wait_seconds: Annotated[float, Field(ge=0, le=45)] = 30,
    ) -> ReviewResult:
        """A review's state, verdict and findings; waits up to wait_seconds while it runs."""
        from planegate.tools.review.review import pick_up_pending, review_result

        # A pending review (sent, reply still coming) whose re-read is due gets it queued here.
        row = await anyio.to_thread.run_sync(lambda: call(pick_up_pending, holder.get(), review))
        if tasks.requested(ctx) and row["status"] in ("queued", "running", "pending", "waiting"):
            return await as_task(ctx, tool="get_review", run=row["run_id"], review=review)
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
            raise Refusal(
                f'run {run!r} needs a signed human approval ([approval] mode = "signed"); an answer in the client '
                f"cannot give it. The human runs `planegate approve {run}` in their own terminal (it signs with "
                "their SSH key), then call accept_run again",
                "needs_human",
            )
        if ask is not None and isinstance(human, AcceptedElicitation) and human.data is not None:
            if not human.data.accept:
                raise Refusal(
                    f"the user did not accept run {run!r}; it stays unaccepted. A human can approve "
                    f"later with `planegate approve {run}`",
                    "needs_human",
                )
            call(approve, env(ctx), run, f"{os_user()} ({actor_of(ctx)})", "elicitation", expected_head=ask.head)
        elif not isinstance(human, AcceptedElicitation):
            raise Refusal(
                f"the user {human.action}d the confirmation; run {run!r} stays unaccepted. A human can "
                f"approve with `planegate approve {run}`, then call accept_run again",
                "needs_human",
            )
        return gated("accept_run", accept, env(ctx), run)

    @tool(destructive=True, idempotent=True)
    def cancel_job(
        job: int,
        reason: Annotated[str, Field(description="why; recorded")],
        ctx: Context,
    ) -> CancelJobResult:
        """Cancel a queued or running job: stop its processes and record it."""
        from planegate.tools.execution.jobs import cancel_job as cancel

        return call(cancel, env(ctx), job, reason)

    @tool(destructive=True, idempotent=True)
    def cancel_task(run: RunId, task: TaskId, reason: str, ctx: Context) -> CancelResult:
        """Cancel a task with a reason: releases its lease and stops its jobs; its worktree is kept."""
        from planegate.tools.execution.dispatch import cancel_task as cancel

        return call(cancel, env(ctx), run, task, reason)

    @tool(destructive=True, described_in={"TaskSpec": "as register_graph's tasks"})
    def amend_graph(
        run: RunId,
        reason: Annotated[str, Field(description="why; shown to the human approving")],
        ctx: Context,
        add: Annotated[list[TaskSpec], Field(default_factory=list)],
        cancel: Annotated[list[str], Field(default_factory=list)],
        change: Annotated[list[TaskSpec], Field(default_factory=list, description="replace undispatched tasks")],
    ) -> AmendResult:
        """Change the plan after dispatch: add tasks, cancel tasks or change undispatched ones; accepted work stays."""
        from planegate.tools.execution.course import amend_graph as amend

        return call(amend, env(ctx), run, add, cancel, change, reason)

    @tool(destructive=True)
    def abandon_run(run: RunId, reason: str, ctx: Context) -> AbandonResult:
        """End a run that will not be accepted: cancels its tasks and jobs; branches and the ledger stay."""
        from planegate.tools.execution.course import abandon_run as abandon

        return call(abandon, env(ctx), run, reason)

    @tool(idempotent=True, open_world=True)
    def publish_run(run: RunId, ctx: Context) -> PublishResult:
        """After acceptance: push the integration branch, open a draft pull request with the report (gh)."""
        from planegate.tools.report.publish import publish_run as publish

        return call(publish, env(ctx), run)

    apps = Apps()
    apps.add_resource(
        FunctionResource(
            uri=RUN_VIEW_URI,
            name="run view",
            description="The run as a page: task graph, gates, evidence, reviews, approval, risks, next action",
            mime_type=APP_MIME_TYPE,
            fn=lambda: run_view_page(holder.get()),
        )
    )
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
            extensions=[task_ext, apps],
        )
    finally:
        sdk_server.configure_logging = sdk_logging
    holder.tools = LazyTools(build_tools)
    server._tool_manager = holder.tools  # the SDK takes built tools only; these are built on first use
    server.middleware.append(first_answer)
    server.env_holder = holder  # type: ignore[attr-defined]

    artifacts = ArtifactTemplate.from_function(
        lambda run, artifact: artifact_content(holder, run, artifact),
        uri_template="planegate://runs/{run}/artifacts/{artifact}",
        name="artifact",
        description=artifact_content.__doc__,
        mime_type="text/plain",
    )
    # The manager has no public way to add a template object of another class.
    server._resource_manager._templates[artifacts.uri_template] = artifacts

    @server.resource("planegate://runs/{run}/report", name="report", mime_type="text/markdown")
    def report_resource(run: str) -> str:
        """The run's report (the pull-request body), rendered from the ledger now."""
        from planegate.tools.errors import PlanegateError
        from planegate.tools.report.report import build_report

        try:
            return build_report(holder.get(), run)[0]
        except PlanegateError as exc:
            raise ResourceError(str(exc)) from exc

    @server.resource("planegate://runs/{run}/view", name="run view data", mime_type="application/json")
    def view_resource(run: str) -> str:
        """What the run view page shows, as JSON (the MCP App reads it through its host)."""
        from planegate.tools.errors import PlanegateError
        from planegate.tools.report.view import run_view

        try:
            return json.dumps(run_view(holder.get(), run, wait_for_git=False), separators=(",", ":"))
        except PlanegateError as exc:
            raise ResourceError(str(exc)) from exc

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
