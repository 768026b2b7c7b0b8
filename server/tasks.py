"""Long work as MCP tasks: the tasks extension (``io.modelcontextprotocol/tasks``, SEP-2663).

When a ``tools/call`` request declares the extension in its client capabilities, ``run_checks``,
``request_review``, ``get_review``, ``get_job`` and ``dispatch_task`` with an executor answer
with a task handle instead of waiting: ``resultType: "task"``, a task id and ``working``. The
client polls ``tasks/get`` (which inlines the tool's final result once the work ended) and may
``tasks/cancel`` (planegate's ``cancel_job``: a running job's process group is ended). A request
without the extension gets today's answer: the tool waits up to ~45 s and then names the job or
review to poll with ``get_job``/``get_review``.

A task is durable: its row (``mcp_tasks``) is written in the ledger before the handle is sent,
and it points at the job or review doing the work, so the task outlives the connection and the
server process. Its id is random (the spec has task ids double as bearer tokens), not the job
id. ``tasks/result`` is served too, for callers written against the 2025-11-25 tasks: it waits
(at most ``RESULT_WAIT_S``) for the task to end and answers with the tool's result itself.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import anyio.to_thread
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.server.context import HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.server import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, Request, RequestParams, Result
from pydantic import BaseModel

EXTENSION_ID = "io.modelcontextprotocol/tasks"
TaskStatus = Literal["working", "input_required", "completed", "failed", "cancelled"]
# planegate keeps every task row as long as the ledger; the TTL promised is a floor, not a purge date.
TTL_MS = 30 * 24 * 3600 * 1000
POLL_MS = 1000
RESULT_WAIT_S = 45.0
CANCEL_REASON = "cancelled by the client (tasks/cancel)"


class TaskIdParams(RequestParams):
    task_id: str


class _TaskState(Result):
    """What both a new task's handle and ``tasks/get`` say about the task."""

    task_id: str
    status: TaskStatus
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None = TTL_MS
    poll_interval_ms: int | None = POLL_MS


class CreateTaskResult(_TaskState):
    result_type: Literal["task"] = "task"


class GetTaskResult(_TaskState):
    result_type: Literal["complete"] = "complete"
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class CancelTaskResult(Result):
    result_type: Literal["complete"] = "complete"


class GetTaskRequest(Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams


class CancelTaskRequest(Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams


class TaskResultRequest(Request[TaskIdParams, Literal["tasks/result"]]):
    method: Literal["tasks/result"] = "tasks/result"
    params: TaskIdParams


def requested(ctx: Context | None) -> bool:
    """Did this request's client declare the tasks extension? (Per request in 2026-07-28.)"""
    if ctx is None:
        return False
    try:
        capabilities = ctx.client_capabilities
    except (AttributeError, ValueError):  # no request context: a direct call, not a client's
        return False
    extensions = getattr(capabilities, "extensions", None) if capabilities is not None else None
    return bool(extensions and EXTENSION_ID in extensions)


@dataclass(frozen=True)
class Snapshot:
    status: TaskStatus
    message: str | None
    updated_at: str


Finisher = Callable[[Any, dict[str, Any]], BaseModel]
"""(env, task row) -> the tool's final result model, once the work ended."""
Renderer = Callable[[str, BaseModel], CallToolResult]
"""(tool, result model) -> the CallToolResult the tool would have answered."""


class Tasks(Extension):
    """The server side: creates task rows, and serves ``tasks/get``, ``tasks/cancel``, ``tasks/result``."""

    identifier = EXTENSION_ID

    def __init__(self, env: Callable[[], Any], finishers: dict[str, Finisher], render: Renderer) -> None:
        self._env = env
        self._finishers = finishers
        self._render = render

    def methods(self) -> Sequence[MethodBinding]:
        return (
            MethodBinding(method="tasks/get", params_type=TaskIdParams, handler=self._get),
            MethodBinding(method="tasks/cancel", params_type=TaskIdParams, handler=self._cancel),
            MethodBinding(method="tasks/result", params_type=TaskIdParams, handler=self._result),
        )

    # -- creating ------------------------------------------------------------------------------

    def create(
        self, env: Any, *, tool: str, run: str, job: int | None = None, review: str | None = None, seed: Any = None
    ) -> CreateTaskResult:
        """Write the task row (durable before the handle leaves), then the handle to answer with."""
        task_id = "pgt-" + secrets.token_urlsafe(18)
        with env.write() as w:
            w.insert(
                "mcp_tasks",
                {
                    "id": task_id,
                    "tool": tool,
                    "run_id": run,
                    "job_id": job,
                    "review_id": review,
                    "seed": seed.model_dump_json() if isinstance(seed, BaseModel) else None,
                    "created_at": w.at,
                },
            )
            w.event("mcp.task_created", run=run, tool=tool, job=job, review=review)
        row = self._row(env, task_id)
        snap = self._snapshot(env, row)
        return CreateTaskResult(
            task_id=task_id,
            status=snap.status,
            status_message=snap.message,
            created_at=row["created_at"],
            last_updated_at=max(snap.updated_at, row["created_at"]),
        )

    # -- reading -------------------------------------------------------------------------------

    def _row(self, env: Any, task_id: str) -> dict[str, Any]:
        row = env.store.one("SELECT * FROM mcp_tasks WHERE id = ?", (task_id,))
        if row is None:
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"Failed to retrieve task: task {task_id!r} not found; use the taskId a tools/call answered",
            )
        return dict(row)

    def _snapshot(self, env: Any, row: dict[str, Any]) -> Snapshot:
        if row["review_id"] is not None:
            review = env.store.one("SELECT * FROM reviews WHERE id = ?", (row["review_id"],))
            job = env.store.one("SELECT * FROM jobs WHERE id = ?", (review["job_id"],)) if review["job_id"] else None
            updated = review["completed_at"] or review["progress_at"] or review["created_at"]
            if job is not None and job["status"] == "cancelled":
                return Snapshot("cancelled", job["error"], job["finished_at"] or updated)
            if review["status"] in ("queued", "running", "pending"):
                return Snapshot(
                    "working", review["progress"] or f"review {review['id']} is {review['status']}", updated
                )
            if review["status"] == "waiting":
                return Snapshot(
                    "working",
                    f"waiting for a human's answer: `planegate review submit {review['id']} --file answer.json`",
                    updated,
                )
            return Snapshot("completed", f"review {review['id']} {review['status']}", updated)
        job = env.store.one("SELECT * FROM jobs WHERE id = ?", (row["job_id"],))
        updated = job["finished_at"] or job["heartbeat_at"] or job["started_at"] or job["created_at"]
        if job["status"] in ("queued", "running"):
            return Snapshot("working", job["progress"] or f"job {job['id']} is {job['status']}", updated)
        if job["status"] == "cancelled":
            return Snapshot("cancelled", job["error"], updated)
        return Snapshot("completed", f"job {job['id']} {job['status']}", updated)

    def _final(self, env: Any, row: dict[str, Any]) -> dict[str, Any]:
        model = self._finishers[row["tool"]](env, row)
        result = self._render(row["tool"], model)
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)

    def get(self, task_id: str) -> GetTaskResult:
        env = self._env()
        row = self._row(env, task_id)
        snap = self._snapshot(env, row)
        return GetTaskResult(
            task_id=task_id,
            status=snap.status,
            status_message=snap.message,
            created_at=row["created_at"],
            last_updated_at=max(snap.updated_at, row["created_at"]),
            result=self._final(env, row) if snap.status == "completed" else None,
        )

    # -- the methods ---------------------------------------------------------------------------

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        require_client_extension(ctx, EXTENSION_ID)
        return await anyio.to_thread.run_sync(self.get, params.task_id)

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        require_client_extension(ctx, EXTENSION_ID)
        await anyio.to_thread.run_sync(self.cancel, params.task_id)
        return {"resultType": "complete"}

    def cancel(self, task_id: str) -> None:
        """planegate's own cancel path for the job doing the work (its process group is ended)."""
        from planegate.tools.errors import PlanegateError
        from planegate.tools.execution.jobs import cancel_job

        env = self._env()
        row = self._row(env, task_id)
        job = row["job_id"]
        if row["review_id"] is not None:
            review = env.store.one("SELECT job_id FROM reviews WHERE id = ?", (row["review_id"],))
            job = review["job_id"] if review else None
        if job is None:
            return  # a manual review waits for a human; there is nothing running to stop
        try:
            cancel_job(env.as_actor("agent:tasks"), int(job), CANCEL_REASON)
        except PlanegateError:
            return  # it ended first: cancellation is cooperative, the task shows how it ended

    async def _result(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
        require_client_extension(ctx, EXTENSION_ID)
        began = time.monotonic()
        while True:
            snapshot = await anyio.to_thread.run_sync(self.get, params.task_id)
            if snapshot.status == "completed" and snapshot.result is not None:
                return {**snapshot.result, "resultType": "complete"}
            if snapshot.status == "cancelled":
                raise MCPError(
                    code=INVALID_PARAMS, message=f"task {params.task_id} was cancelled: {snapshot.status_message}"
                )
            if time.monotonic() - began >= RESULT_WAIT_S:
                raise MCPError(
                    code=INVALID_PARAMS,
                    message=f"task {params.task_id} is still {snapshot.status} after {RESULT_WAIT_S:.0f} s "
                    f"({snapshot.status_message}); call tasks/result again or poll tasks/get",
                )
            await anyio.sleep(0.1)


class ClientTasks(ClientExtension):
    """A client for the extension: declares it, and turns a task handle into the tool's final
    result by polling ``tasks/get`` (at the interval the server asks, bounded by ``limit_s``)."""

    identifier = EXTENSION_ID

    def __init__(self, limit_s: float = 600.0, on_created: Callable[[CreateTaskResult], None] | None = None) -> None:
        self.limit_s = limit_s
        self.on_created = on_created

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return (ResultClaim(result_type="task", model=CreateTaskResult, resolve=self._resolve),)

    async def _resolve(self, created: CreateTaskResult, ctx: ClaimContext) -> CallToolResult:
        if self.on_created is not None:
            self.on_created(created)
        with anyio.fail_after(self.limit_s):
            while True:
                snap = await ctx.session.send_request(
                    GetTaskRequest(params=TaskIdParams(task_id=created.task_id)), GetTaskResult
                )
                if snap.status == "completed" and snap.result is not None:
                    return CallToolResult.model_validate(snap.result, by_name=False)
                if snap.status in ("failed", "cancelled"):
                    text = json.dumps(snap.error) if snap.error else (snap.status_message or snap.status)
                    raise RuntimeError(f"task {created.task_id} {snap.status}: {text}")
                await anyio.sleep((snap.poll_interval_ms or POLL_MS) / 1000)
