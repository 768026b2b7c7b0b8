"""The ChatGPT web driver: send a review prompt (plus files) in the user's session and read the reply.

It uses Playwright's sync API, so it must run in a thread without an asyncio loop. Every call
takes the browser lease, opens one page of its own, and closes only that page.

Invariants:
- nothing is sent until the page is known to be usable: no Cloudflare challenge, no login
  control, no usage-cap banner, and every named selector the step needs matches (else
  ``SelectorDrift`` after a short grace, never a long wait);
- ``on_sent(url)`` is called as soon as the conversation has a URL, before waiting for the reply,
  so a caller that crashes later re-opens it with ``read_reply`` (which never sends) instead of
  sending twice;
- a reply is finished only on positive proof: the stop control is gone, the reply text has not
  changed for ``stable_for_s`` across consecutive polls, and the finished-turn actions (copy
  button) are visible in that turn. An error banner or a retry control is a failure, not a wait;
- every wait has a deadline (``DeadlineExceeded`` names the phase).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from .errors import (
    BridgeError,
    CloudflareChallenge,
    DeadlineExceeded,
    LoggedOut,
    OptionNotFound,
    ReplyFailed,
    SelectorDrift,
    UsageCapReached,
)
from .pagejs import MARKDOWN_JS, PROBE_JS, PROJECT_JS
from .selectors import Profile, load_profile
from .session import PageSession, evaluate_bounded, playwright_errors

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from .doctor import DoctorReport


@dataclass
class BridgeConfig:
    endpoints: list[str]  # CDP candidates, already resolved by the caller
    base_url: str | None = None  # default: the profile's base_url
    project: str | None = None  # sidebar project name (or its URL) to start the conversation in
    model_hint: str | None = None  # text of the model-menu item to pick
    selectors_override: Path | None = None
    poll_interval_s: float = 0.25
    stable_for_s: float = 0.8  # reply text unchanged this long (plus stop gone + actions visible) = done
    thinking_timeout_s: float = 600  # no assistant text yet
    reply_timeout_s: float = 1800  # whole reply
    action_timeout_s: float = 15  # clicks, selector waits, page readiness
    drift_grace_s: float = 2.0  # how long a needed selector may take to appear on a ready page
    navigation_timeout_s: float = 45
    upload_timeout_s: float = 120  # attached files must finish uploading before send enables
    lease_timeout_s: float = 30  # wait for another review to release the browser


@dataclass
class BridgeReply:
    markdown: str
    conversation_url: str
    sent_at: float  # wall-clock seconds (time.time())
    finished_at: float  # when the reply text was last seen changing
    detected_at: float  # when completion was proven


@dataclass(frozen=True)
class PageState:
    """One poll of the page (see ``pagejs.PROBE_JS``)."""

    url: str
    title: str
    composer: bool
    logged_out: bool
    cloudflare: bool
    turns: int
    pending_user: bool
    has_body: bool
    text_len: int
    text_hash: int
    quiet_s: float | None  # in-page time since the reply body last changed, when known
    stop: bool
    actions: bool
    retry: bool
    error: str | None
    usage_cap: str | None

    @classmethod
    def from_js(cls, raw: dict[str, Any]) -> PageState:
        return cls(
            url=raw["url"],
            title=raw["title"],
            composer=raw["composer"],
            logged_out=raw["loggedOut"],
            cloudflare=raw["cloudflare"],
            turns=raw["turns"],
            pending_user=raw["pendingUser"],
            has_body=raw["hasBody"],
            text_len=raw["textLen"],
            text_hash=raw["textHash"],
            quiet_s=None if raw["quietMs"] is None else raw["quietMs"] / 1000,
            stop=raw["stop"],
            actions=raw["actions"],
            retry=raw["retry"],
            error=raw["error"],
            usage_cap=raw["usageCap"],
        )


def is_conversation_url(url: str) -> bool:
    return "/c/" in urlsplit(url).path


def _ignore(_url: str) -> None:
    return None


class ChatGPTBridge:
    """The driver. ``lease_dir`` holds the browser lease files (shared by every process that
    drives the same browser). Raises ``ProfileError`` when the selector override is malformed."""

    def __init__(self, config: BridgeConfig, lease_dir: Path) -> None:
        self.config = config
        self.lease_dir = lease_dir
        self.profile: Profile = load_profile(config.selectors_override)
        self.base_url = config.base_url or self.profile.base_url

    # -- public operations -------------------------------------------------------------------

    def ask(self, prompt: str, files: Sequence[Path], *, on_sent: Callable[[str], None]) -> BridgeReply:
        """Start a new conversation, attach ``files``, send ``prompt``, return the finished reply.

        Raises ``CloudflareChallenge``, ``LoggedOut``, ``UsageCapReached`` or ``SelectorDrift``
        before sending; ``ReplyFailed``, ``UsageCapReached`` or ``DeadlineExceeded`` after;
        ``BrowserBusy`` / ``EndpointUnreachable`` when no browser session can be had.
        """
        paths = self._check_files(files)
        with self._session() as session:
            page = session.page
            self._open(page, self.base_url)
            if self.config.project:
                self._enter_project(page, self.config.project)
            self._ensure_new_chat(page)
            if self.config.model_hint:
                self._pick_model(page, self.config.model_hint)
            before = self._probe(page).turns
            self._compose(page, prompt, paths)
            sent_at = self._send(page, uploading=bool(paths))
            return self._await_reply(page, min_turns=before + 1, sent_at=sent_at, on_sent=on_sent)

    def follow_up(self, conversation_url: str, prompt: str, *, on_sent: Callable[[str], None] = _ignore) -> BridgeReply:
        """Send ``prompt`` as the next message of an existing conversation and return its reply.

        A reply still streaming in that conversation is waited for first (it would block sending).
        """
        with self._session() as session:
            page = session.page
            state = self._open_conversation(page, conversation_url)
            if state.stop:
                self._await_reply(page, min_turns=state.turns, sent_at=time.time(), on_sent=None)
            before = self._probe(page).turns
            self._compose(page, prompt, [])
            sent_at = self._send(page, uploading=False)
            return self._await_reply(page, min_turns=before + 1, sent_at=sent_at, on_sent=on_sent)

    def read_reply(self, conversation_url: str) -> BridgeReply:
        """Re-open a conversation and return its last assistant reply, waiting while it streams.

        Never sends anything. Raises ``ReplyFailed`` when the conversation has no reply to read.
        """
        with self._session() as session:
            page = session.page
            self._open_conversation(page, conversation_url, reading=True)
            return self._await_reply(page, min_turns=1, sent_at=time.time(), on_sent=None, reading=True)

    def doctor(self) -> DoctorReport:
        """Check endpoint, login, challenge, banners and every named selector; sends nothing."""
        from .doctor import run_doctor

        return run_doctor(self.config, self.profile, self.base_url)

    # -- steps -------------------------------------------------------------------------------

    def _session(self) -> PageSession:
        return PageSession(
            self.config.endpoints,
            self.lease_dir,
            lease_timeout_s=self.config.lease_timeout_s,
            connect_timeout_s=self.config.action_timeout_s,
        )

    @staticmethod
    def _check_files(files: Sequence[Path]) -> list[Path]:
        paths = [Path(f).resolve() for f in files]
        for path in paths:
            if not path.is_file():
                raise BridgeError(f"packet file {path} does not exist or is not a file; rebuild the review packet")
        return paths

    def _probe(self, page: Page) -> PageState:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        timeout = self.config.action_timeout_s
        for attempt in range(3):
            try:
                return PageState.from_js(evaluate_bounded(page, PROBE_JS, self.profile.js_args(), timeout))
            except PlaywrightTimeout as exc:
                raise DeadlineExceeded("reading the page (the tab stopped responding)", timeout, page.url) from exc
            except PlaywrightError as exc:
                # A navigation between polls destroys the execution context; the next poll is fine.
                if page.is_closed() or attempt == 2:
                    raise BridgeError(
                        f"lost the ChatGPT page ({str(exc).splitlines()[0]}); was the tab closed? retry"
                    ) from exc
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def _open(self, page: Page, url: str, *, reading: bool = False) -> PageState:
        """Navigate and wait until the page is usable; raise on challenge, login, cap or drift.

        ``reading``: only a reply will be read, so a usage-cap banner is no reason to stop.
        """
        cfg = self.config
        with playwright_errors(f"loading {url}", cfg.navigation_timeout_s, url):
            page.goto(url, wait_until="domcontentloaded", timeout=cfg.navigation_timeout_s * 1000)
        start = time.monotonic()
        logged_out_since: float | None = None
        while True:
            state = self._probe(page)
            now = time.monotonic()
            if state.cloudflare:
                raise CloudflareChallenge(state.url)
            # Only a login control that stays up counts: hydration can flash one before the session loads.
            logged_out_since = (logged_out_since or now) if state.logged_out else None
            if logged_out_since is not None and now - logged_out_since >= 1.0:
                raise LoggedOut(state.url)
            if state.usage_cap and not reading:
                raise UsageCapReached(state.usage_cap, state.url)
            # Reading needs the conversation, not the composer (a capped session may hide it).
            if (state.composer or (reading and state.turns)) and logged_out_since is None:
                return state
            if now - start >= cfg.action_timeout_s and logged_out_since is None:
                raise SelectorDrift(["composer"], self.profile.drift_report(["composer"], state.url), step="loading")
            time.sleep(min(cfg.poll_interval_s, 0.1))

    def _open_conversation(self, page: Page, url: str, *, reading: bool = False) -> PageState:
        state = self._open(page, url, reading=reading)
        if not is_conversation_url(state.url):
            raise ReplyFailed(f"{url} did not open a conversation (the page went to {state.url})", url)
        return state

    def _enter_project(self, page: Page, project: str) -> None:
        if project.startswith(("http://", "https://", "/")):
            self._open(page, urljoin(page.url, project))
            return
        deadline = time.monotonic() + self.config.drift_grace_s
        while True:
            with playwright_errors("looking for the project", self.config.action_timeout_s, page.url):
                args = {**self.profile.js_args(), "name": project}
                found = evaluate_bounded(page, PROJECT_JS, args, self.config.action_timeout_s)
            if found["href"]:
                self._open(page, found["href"])
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if not found["seen"]:
            raise SelectorDrift(
                ["project_link"],
                self.profile.drift_report(["project_link"], page.url)
                + f"\nlooking for project {project!r}; or set the project to its URL",
                step="entering the project",
            )
        raise OptionNotFound("project_link", "project", project, found["seen"])

    def _ensure_new_chat(self, page: Page) -> None:
        if not is_conversation_url(page.url):
            return
        # The base URL (or project page) normally is a new chat; some sessions redirect to the last one.
        sel = self.profile.require(page, ["new_chat"], self.config.drift_grace_s, step="starting a new chat")
        with playwright_errors("starting a new chat", self.config.action_timeout_s, page.url):
            page.locator(sel["new_chat"]).first.click(timeout=self.config.action_timeout_s * 1000)
            page.wait_for_url(lambda u: not is_conversation_url(u), timeout=self.config.action_timeout_s * 1000)

    def _pick_model(self, page: Page, hint: str) -> None:
        cfg = self.config
        sel = self.profile.require(page, ["model_switcher"], cfg.drift_grace_s, step="choosing the model")
        ms = cfg.action_timeout_s * 1000
        with playwright_errors("opening the model menu", cfg.action_timeout_s, page.url):
            page.locator(sel["model_switcher"]).first.click(timeout=ms)
        item = self.profile.require(page, ["model_item"], cfg.drift_grace_s, step="choosing the model")["model_item"]
        with playwright_errors("choosing the model", cfg.action_timeout_s, page.url):
            items = page.locator(item).filter(visible=True)
            items.first.wait_for(state="visible", timeout=ms)
            labels = [t.strip() for t in items.all_inner_texts()]
            want = hint.casefold()
            exact = [i for i, t in enumerate(labels) if t.splitlines() and t.splitlines()[0].strip().casefold() == want]
            loose = [i for i, t in enumerate(labels) if want in t.casefold()]
            if not (exact or loose):
                page.keyboard.press("Escape")
                raise OptionNotFound("model_item", "model", hint, [t.splitlines()[0] for t in labels if t])
            items.nth((exact or loose)[0]).click(timeout=ms)

    def _compose(self, page: Page, prompt: str, files: Sequence[Path]) -> None:
        cfg = self.config
        ms = cfg.action_timeout_s * 1000
        composer = self.profile.require(page, ["composer"], cfg.drift_grace_s, step="writing the prompt")["composer"]
        if files:
            if self.profile.scan(page, ["file_input"])["file_input"] is None:
                attach = self.profile.require(page, ["attach_button"], cfg.drift_grace_s, step="attaching files")
                with playwright_errors("opening the attach menu", cfg.action_timeout_s, page.url):
                    page.locator(attach["attach_button"]).first.click(timeout=ms)
            file_input = self.profile.require(page, ["file_input"], cfg.drift_grace_s, step="attaching files")
            with playwright_errors("attaching the packet files", cfg.action_timeout_s, page.url):
                page.locator(file_input["file_input"]).first.set_input_files(list(files), timeout=ms)
        with playwright_errors("writing the prompt", cfg.action_timeout_s, page.url):
            box = page.locator(composer).first
            box.click(timeout=ms)
            box.fill(prompt, timeout=ms)  # fill inserts in one step; per-key typing is too slow for long prompts
            written = box.evaluate(
                "el => (el.value !== undefined ? el.value : el.textContent || '').length", timeout=ms
            )
        if prompt.strip() and not written:
            raise SelectorDrift(
                ["composer"],
                f"the composer ({composer}) stayed empty after writing {len(prompt)} characters",
                step="writing the prompt",
            )

    def _send(self, page: Page, *, uploading: bool) -> float:
        cfg = self.config
        send = self.profile.require(page, ["send"], cfg.drift_grace_s, step="sending")["send"]
        # The send button stays disabled while attachments upload; click() waits for it to enable.
        wait_s = cfg.upload_timeout_s if uploading else cfg.action_timeout_s
        with playwright_errors("waiting for the send button to enable", wait_s, page.url):
            page.locator(send).first.click(timeout=wait_s * 1000)
        return time.time()

    # -- completion --------------------------------------------------------------------------

    def _await_reply(
        self,
        page: Page,
        *,
        min_turns: int,
        sent_at: float,
        on_sent: Callable[[str], None] | None,
        reading: bool = False,
    ) -> BridgeReply:
        """Poll until the reply in assistant turn ``min_turns`` (or later) is proven finished."""
        cfg = self.config
        start = time.monotonic()
        notified = on_sent is None
        conversation_url = ""
        first_text: float | None = None
        last_key: tuple[int, int, int] | None = None
        last_change = start
        same_polls = 0
        body_missing_since: float | None = None
        while True:
            state = self._probe(page)
            now = time.monotonic()
            if is_conversation_url(state.url):
                conversation_url = state.url
                if not notified and on_sent is not None:
                    notified = True
                    on_sent(state.url)
            ours = state.turns >= min_turns and not state.pending_user
            self._raise_for_failure(state, ours)
            if ours and state.text_len and first_text is None:
                first_text = now
            key = (state.turns, state.text_len, state.text_hash)
            if key != last_key:
                last_key, last_change, same_polls = key, now, 0
            else:
                same_polls += 1
            # Both clocks can only under-estimate the real quiet time, so the larger one is safe.
            quiet = max(now - last_change, state.quiet_s or 0.0)
            looks_done = ours and state.text_len > 0 and not state.stop and state.actions
            if looks_done and same_polls >= 1 and quiet >= cfg.stable_for_s and notified:
                return self._finish(page, conversation_url or state.url, sent_at, time.time() - quiet)

            body_missing_since = (body_missing_since or now) if ours and state.actions and not state.has_body else None
            body_missing = None if body_missing_since is None else now - body_missing_since
            self._raise_for_drift(state, ours, now - start, quiet, body_missing, reading)
            elapsed = now - start
            if first_text is None and elapsed >= cfg.thinking_timeout_s:
                raise DeadlineExceeded(
                    "waiting for the reply to start (thinking)",
                    cfg.thinking_timeout_s,
                    conversation_url,
                    "read it later with read_reply, or raise thinking_timeout_s",
                )
            if elapsed >= cfg.reply_timeout_s:
                raise DeadlineExceeded(
                    "waiting for the reply to finish",
                    cfg.reply_timeout_s,
                    conversation_url,
                    "read it later with read_reply, or raise reply_timeout_s",
                )
            if not notified and elapsed >= cfg.action_timeout_s:
                raise DeadlineExceeded(
                    "waiting for the conversation URL after sending", cfg.action_timeout_s, state.url
                )
            pause = cfg.poll_interval_s
            if looks_done:
                # Wake when the text will have been quiet for stable_for_s, not at the next poll
                # tick: finished→detected stays close to stable_for_s.
                pause = min(pause, max(cfg.stable_for_s - quiet, 0.0))
            time.sleep(max(pause, 0.01))

    def _raise_for_failure(self, state: PageState, ours: bool) -> None:
        """Page states that end the wait: challenge, logout, usage cap, a failed reply."""
        if state.cloudflare:
            raise CloudflareChallenge(state.url)
        if state.logged_out and not state.composer:
            raise LoggedOut(state.url)
        # ChatGPT often shows the cap notice right after the last allowed reply: a reply that is
        # streaming or finished is still read; only a prompt left without one is refused.
        if state.usage_cap and not (ours and state.text_len and (state.stop or state.actions)):
            raise UsageCapReached(state.usage_cap, state.url)
        if ours and (state.error or (state.retry and not state.actions)):
            raise ReplyFailed(state.error or "a Retry control appeared before the reply finished", state.url)

    def _raise_for_drift(
        self, state: PageState, ours: bool, waited: float, quiet: float, body_missing: float | None, reading: bool
    ) -> None:
        """Selectors that should have matched by now: report them instead of waiting on."""
        cfg = self.config
        if not ours and not state.stop and waited >= cfg.action_timeout_s:
            if reading:
                raise ReplyFailed("the conversation's last prompt has no assistant reply", state.url)
            names = ["assistant_turn", "stop"]
            raise SelectorDrift(
                names,
                self.profile.drift_report(names, state.url)
                + f"\nneither a new assistant turn nor a stop control appeared {cfg.action_timeout_s:.0f} s "
                "after sending",
                step="waiting for the reply",
            )
        if body_missing is not None and body_missing >= cfg.drift_grace_s:
            raise SelectorDrift(
                ["reply_body"], self.profile.drift_report(["reply_body"], state.url), step="reading the reply"
            )
        if ours and state.text_len and not state.stop and not state.actions and quiet >= cfg.action_timeout_s:
            raise SelectorDrift(
                ["finished_actions"],
                self.profile.drift_report(["finished_actions"], state.url)
                + f"\nthe reply stopped changing {quiet:.0f} s ago and no stop control is shown",
                step="waiting for the reply to finish",
            )

    def _finish(self, page: Page, url: str, sent_at: float, finished_at: float) -> BridgeReply:
        detected_at = time.time()
        timeout = self.config.action_timeout_s
        with playwright_errors("reading the reply", timeout, url):
            markdown = evaluate_bounded(page, MARKDOWN_JS, self.profile.js_args(), timeout)
        if markdown is None:
            raise SelectorDrift(
                ["reply_body"], self.profile.drift_report(["reply_body"], url), step="reading the reply"
            )
        return BridgeReply(
            markdown=markdown,
            conversation_url=url,
            sent_at=sent_at,
            finished_at=finished_at,
            detected_at=detected_at,
        )
