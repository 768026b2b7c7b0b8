"""The ChatGPT web driver: send a review prompt (inline, or with files) in the user's session and
read the reply.

It uses Playwright's sync API, so it must run in a thread without an asyncio loop. Every call
takes the browser lease, opens one page of its own, and closes only that page.

Invariants:
- nothing is sent until the page is known to be usable: no Cloudflare interstitial (judged by
  the interstitial's own signs, never by the bot-management script healthy pages carry), positive
  proof of a logged-in account (a guest page also has a composer), no "Welcome back" picker, no
  usage-cap banner, blocking dialogs closed, and every named selector the step needs matches
  (else ``SelectorDrift`` after a short grace, never a long wait);
- what is typed is checked: a composer holding less than was written is ``PromptTruncated``
  (nothing is sent); an inline prompt that is cut falls back to the files, when given;
- a send is confirmed by a new user turn carrying the prompt's start (or a cleared composer
  plus progress); a swallowed click gets one Enter, then ``SendNotCommitted``;
- ``on_sent(url)`` is called with the conversation's durable URL (``/c/<id>``, never the
  transient ``/c/WEB:…``) as soon as it shows, and again if it changes, so a caller that
  crashes later re-opens it with ``read_reply`` (which never sends) instead of sending twice;
- a reply is finished only on positive proof: no live activity (stop control, shimmer,
  aria-busy, progress bar, a present-tense status label), the finished-turn actions visible on
  several consecutive unchanged polls, and the text quiet for long enough: briefly when the
  prompt's end marker closes the reply, much longer when it does not (a settled preamble looks
  finished for a while). An error banner or retry control that persists is a failure;
- the reply is read through ChatGPT's own copy button with the page's clipboard calls
  intercepted in the page (the user's clipboard is never touched); the DOM (CodeMirror code
  blocks included) is the fallback;
- every wait has a deadline. A deadline that passes after the prompt was sent, with a durable
  conversation URL known, is ``ReplyPending`` (re-read later), not a failure;
- every failure names its stage and, given a diagnostics directory, leaves a screenshot and a
  DOM summary there.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from .config import BridgeConfig, BridgeReply, Fallback, Progress
from .diagnostics import capture
from .doctor import DoctorReport, run_doctor
from .errors import (
    AccountChooser,
    BridgeError,
    CloudflareChallenge,
    DeadlineExceeded,
    LoggedOut,
    ModelNotVerified,
    OptionNotFound,
    PromptTruncated,
    ReplyFailed,
    ReplyPending,
    SelectorDrift,
    SendNotCommitted,
    UsageCapReached,
)
from .pagejs import (
    ACCOUNT_JS,
    CHIPS_JS,
    CLEAR_DRAFT_JS,
    COPY_JS,
    DISMISS_JS,
    MARK_FILE_INPUT_JS,
    MARKDOWN_JS,
    PROJECT_JS,
    SESSION_JS,
    SESSION_PATH,
)
from .probe import PageState, conversation_id, is_conversation_url, probe
from .selectors import Match, Profile, load_profile
from .session import PageSession, evaluate_async_bounded, evaluate_bounded, playwright_errors

if TYPE_CHECKING:
    from playwright.sync_api import Page

FALLBACKS_FILE = "fallbacks.json"
# Names whose resolution is worth recording once a reply is in (the rest are seen while sending).
READ_NAMES = ("assistant_turn", "user_turn", "reply_body", "finished_actions", "turn_copy")


def _nonws(text: str) -> str:
    return "".join(text.split())


@dataclass
class _Call:
    """What one public call learns on the way: the stage it is in, fallbacks, notes."""

    diagnostics_dir: Path | None
    on_progress: Callable[[Progress], None] | None = None
    stage: str = "navigate"
    fallbacks: dict[str, Fallback] = field(default_factory=dict)
    primary_ok: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    model: str | None = None
    model_verified: bool | None = None

    def saw(self, profile: Profile, found: dict[str, Match] | dict[str, Match | None]) -> None:
        for name, match in found.items():
            if match is None:
                continue
            if match.fallback:
                self.fallbacks[name] = Fallback(name, profile.candidates(name)[0], match.candidate)
            else:
                self.primary_ok.add(name)
                self.fallbacks.pop(name, None)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


class ChatGPTBridge:
    """The driver. ``lease_dir`` holds the browser lease files (shared by every process that
    drives the same browser) and the record of selector fallbacks seen. Raises ``ProfileError``
    when the selector override is malformed."""

    def __init__(self, config: BridgeConfig, lease_dir: Path) -> None:
        self.config = config
        self.lease_dir = lease_dir
        self.profile: Profile = load_profile(config.selectors_override)
        self.base_url = config.base_url or self.profile.base_url

    # -- public operations -------------------------------------------------------------------

    def ask(
        self,
        prompt: str,
        files: Sequence[Path] = (),
        *,
        on_sent: Callable[[str], None],
        inline: str | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        diagnostics_dir: Path | None = None,
    ) -> BridgeReply:
        """Start a new conversation, send the prompt, return the finished reply.

        ``inline``: the whole packet as one prompt. When given and no longer than
        ``inline_limit_chars`` it is typed instead of ``prompt`` + ``files``; when the composer
        cuts it, the composer is cleared and ``prompt`` + ``files`` are sent instead.

        Raises ``CloudflareChallenge``, ``LoggedOut``, ``AccountChooser``, ``UsageCapReached``,
        ``SelectorDrift``, ``ModelNotVerified`` or ``PromptTruncated`` before sending;
        ``SendNotCommitted`` when the send does not land; ``ReplyFailed``, ``UsageCapReached``,
        ``DeadlineExceeded`` or ``ReplyPending`` after; ``BrowserBusy`` / ``EndpointUnreachable``
        when no browser session can be had.
        """
        paths = self._check_files(files)
        call = _Call(diagnostics_dir, on_progress)
        with self._session() as session, self._failures(call, session):
            page = session.page
            self._open(call, page, self.base_url)
            if self.config.project:
                self._enter_project(call, page, self.config.project)
            self._ensure_new_chat(call, page)
            if self.config.model_hint:
                self._pick_model(call, page, self.config.model_hint)
            before = self._probe(page)
            text, delivery = self._compose_packet(call, page, prompt, paths, inline)
            sent_at = self._send(call, page, text, before, uploading=delivery == "files")
            reply = self._await_reply(call, page, min_turns=before.turns + 1, sent_at=sent_at, on_sent=on_sent)
            reply.delivery = delivery
            return reply

    def follow_up(
        self,
        conversation_url: str,
        prompt: str,
        *,
        on_sent: Callable[[str], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        diagnostics_dir: Path | None = None,
    ) -> BridgeReply:
        """Send ``prompt`` as the next message of an existing conversation and return its reply.

        The conversation's turns must finish hydrating first (ChatGPT resets the composer while
        they load); a reply still streaming there is waited for (it would block sending).
        """
        call = _Call(diagnostics_dir, on_progress)
        with self._session() as session, self._failures(call, session):
            page = session.page
            state = self._open_conversation(call, page, conversation_url)
            if state.active:
                self._await_reply(call, page, min_turns=state.turns, sent_at=time.time(), on_sent=None, reading=True)
            before = self._probe(page)
            self._compose(call, page, prompt, [])
            sent_at = self._send(call, page, prompt, before, uploading=False)
            return self._await_reply(call, page, min_turns=before.turns + 1, sent_at=sent_at, on_sent=on_sent)

    def read_reply(
        self,
        conversation_url: str,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        diagnostics_dir: Path | None = None,
    ) -> BridgeReply:
        """Re-open a conversation and return its last assistant reply, waiting while it comes.

        Never sends anything. Raises ``ReplyFailed`` when the conversation has no reply to read,
        ``ReplyPending`` when it is still coming after ``reread_timeout_s``.
        """
        call = _Call(diagnostics_dir, on_progress)
        with self._session() as session, self._failures(call, session):
            page = session.page
            self._open_conversation(call, page, conversation_url, reading=True)
            return self._await_reply(call, page, min_turns=1, sent_at=time.time(), on_sent=None, reading=True)

    def doctor(self) -> DoctorReport:
        """Check endpoint, login, challenge, banners and every named selector; sends nothing."""
        return run_doctor(self.config, self.profile, self.base_url, self.lease_dir / FALLBACKS_FILE)

    # -- plumbing ------------------------------------------------------------------------------

    def _session(self) -> PageSession:
        return PageSession(
            self.config.endpoints,
            self.lease_dir,
            lease_timeout_s=self.config.lease_timeout_s,
            connect_timeout_s=self.config.action_timeout_s,
            attach_timeout_s=self.config.attach_timeout_s,
        )

    @contextlib.contextmanager
    def _failures(self, call: _Call, session: PageSession) -> Iterator[None]:
        """Name the stage of every failure, save what the page showed, record fallbacks seen."""
        try:
            yield
        except ReplyPending:
            raise
        except BridgeError as exc:
            if not exc.stage:
                exc.stage = call.stage
            if call.diagnostics_dir is not None and session.has_page:
                exc.diagnostics = capture(session.page, call.diagnostics_dir, exc.stage, exc, self.profile)
            raise
        finally:
            self._store_fallbacks(call)

    def _store_fallbacks(self, call: _Call) -> None:
        """Keep the fallbacks seen (and the names seen healthy again) for ``doctor`` to show."""
        if not call.fallbacks and not call.primary_ok:
            return
        path = self.lease_dir / FALLBACKS_FILE
        with contextlib.suppress(OSError, ValueError):
            current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            if not isinstance(current, dict):
                current = {}
            for name in call.primary_ok:
                current.pop(name, None)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            for fb in call.fallbacks.values():
                current[fb.name] = {"primary": fb.primary, "used": fb.used, "at": stamp}
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(current, indent=2, sort_keys=True), encoding="utf-8")
            tmp.replace(path)

    @staticmethod
    def _check_files(files: Sequence[Path]) -> list[Path]:
        paths = [Path(f).resolve() for f in files]
        for path in paths:
            if not path.is_file():
                raise BridgeError(f"packet file {path} does not exist or is not a file; rebuild the review packet")
        return paths

    def _probe(self, page: Page) -> PageState:
        return probe(page, self.profile, self.config.action_timeout_s, self.config.end_marker)

    def _require(self, call: _Call, page: Page, names: Sequence[str], grace: float, step: str) -> dict[str, Match]:
        found = self.profile.require(page, names, grace, step=step)
        call.saw(self.profile, found)
        return found

    def _click(self, call: _Call, page: Page, selector: str, what: str, timeout: float) -> None:
        """Click the first visible match, closing a dialog that gets in the way; bounded."""
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        deadline = time.monotonic() + timeout
        while True:
            slice_s = min(2.0, max(deadline - time.monotonic(), 0.1))
            try:
                page.locator(selector).filter(visible=True).first.click(timeout=slice_s * 1000)
                return
            except PlaywrightTimeout as exc:
                if self._dismiss_dialog(call, page):
                    continue
                if time.monotonic() >= deadline:
                    raise DeadlineExceeded(what, timeout, page.url) from exc
            except PlaywrightError as exc:
                raise BridgeError(f"{what} failed in the browser: {str(exc).splitlines()[0]}; retry") from exc

    def _dismiss_dialog(self, call: _Call, page: Page) -> bool:
        with playwright_errors("closing a dialog", self.config.action_timeout_s, page.url):
            done = evaluate_bounded(page, DISMISS_JS, self.profile.js_args(), self.config.action_timeout_s)
        if done["dismissed"]:
            call.note(f"closed a dialog ({done['text'][:60]!r}) with {done['dismissed']!r}")
            time.sleep(0.2)
            return True
        return False

    # -- navigation and login ------------------------------------------------------------------

    def _open(self, call: _Call, page: Page, url: str, *, reading: bool = False) -> PageState:
        """Navigate and wait until the page is usable; raise on challenge, login, cap or drift.

        ``reading``: only a reply will be read, so a usage-cap banner is no reason to stop and the
        conversation's turns are proof enough of access.
        """
        cfg = self.config
        call.stage = "navigate"
        with playwright_errors(f"loading {url}", cfg.navigation_timeout_s, url):
            page.goto(url, wait_until="domcontentloaded", timeout=cfg.navigation_timeout_s * 1000)
        start = time.monotonic()
        logged_out_since: float | None = None
        weak_since: float | None = None
        composer_since: float | None = None
        session_user: bool | None = None
        session_asked = False
        account_clicked = False
        while True:
            state = self._probe(page)
            now = time.monotonic()
            if state.cf_strong:
                raise CloudflareChallenge(state.url, state.cf_evidence)
            weak_since = (weak_since or now) if state.cf_weak else None
            if weak_since is not None and now - weak_since >= cfg.cloudflare_grace_s:
                raise CloudflareChallenge(state.url, state.cf_evidence)
            if state.dialog is not None:
                if state.dialog["welcome"]:
                    if cfg.account_email and not account_clicked:
                        account_clicked = self._choose_account(page, cfg.account_email)
                        if account_clicked:
                            call.note("chose the configured account on the 'Welcome back' picker")
                            start = time.monotonic()
                            time.sleep(0.3)
                            continue
                    raise AccountChooser(state.url, int(state.dialog["accounts"]), cfg.account_email)
                self._dismiss_dialog(call, page)
            # Only a login control that stays up counts: hydration can flash one before the session loads.
            logged_out_since = (logged_out_since or now) if state.logged_out else None
            if logged_out_since is not None and now - logged_out_since >= 1.0:
                raise LoggedOut(state.url)
            if state.usage_cap and not reading:
                raise UsageCapReached(state.usage_cap, state.url)
            usable = logged_out_since is None and weak_since is None
            if reading and usable and (state.turns or state.user_turns):
                return state
            if usable and state.composer:
                if reading:
                    return state
                call.stage = "login"
                composer_since = composer_since or now
                if state.logged_in:
                    return state
                if not session_asked:
                    session_asked = True
                    session_user = self._session_user(page)
                if session_user:
                    return state
                if session_user is False:
                    raise LoggedOut(state.url, "a guest page: a composer, but the session has no account")
                if now - composer_since >= cfg.login_grace_s:
                    raise LoggedOut(
                        state.url,
                        "no account profile control appeared and the session endpoint gave no answer",
                    )
            elif now - start >= cfg.action_timeout_s and usable:
                raise SelectorDrift(["composer"], self.profile.drift_report(["composer"], state.url), step="loading")
            time.sleep(min(cfg.poll_interval_s, 0.1))

    def _session_user(self, page: Page) -> bool | None:
        """Whether the page's session endpoint names a user (``None``: it did not say)."""
        from playwright.sync_api import Error as PlaywrightError

        timeout = min(self.config.action_timeout_s, 10.0)
        try:
            found = evaluate_async_bounded(
                page, SESSION_JS, {"path": SESSION_PATH, "timeoutMs": timeout * 900}, timeout
            )
        except PlaywrightError:
            return None
        user = found.get("user") if isinstance(found, dict) else None
        return user if isinstance(user, bool) else None

    def _choose_account(self, page: Page, email: str) -> bool:
        from playwright.sync_api import Error as PlaywrightError

        args = {**self.profile.js_args(), "email": email}
        try:
            with playwright_errors("choosing the account", self.config.action_timeout_s, page.url):
                return bool(evaluate_bounded(page, ACCOUNT_JS, args, self.config.action_timeout_s))
        except BridgeError as exc:
            # The choice reloads the page; a reload that beat the answer means the click happened.
            if isinstance(exc.__cause__, PlaywrightError) and "context was destroyed" in str(exc.__cause__):
                return True
            raise

    def _open_conversation(self, call: _Call, page: Page, url: str, *, reading: bool = False) -> PageState:
        """Open a conversation and wait until its turns stop hydrating (ChatGPT resets the
        composer while they load, wiping typed text); refuse a redirect to another thread."""
        want = conversation_id(url)
        if want is None:
            raise ReplyFailed(f"{url} did not open a conversation (not a /c/<id> conversation URL)", url)
        state = self._open(call, page, url, reading=reading)
        call.stage = "navigate"
        if conversation_id(state.url) != want:
            raise ReplyFailed(f"{url} did not open a conversation (the page went to {state.url})", url)
        deadline = time.monotonic() + self.config.navigation_timeout_s
        stable, last = 0, -1
        while time.monotonic() < deadline:
            state = self._probe(page)
            count = state.turns + state.user_turns
            stable = stable + 1 if count == last and count > 0 else 0
            last = count
            if stable >= 3:
                break
            time.sleep(max(self.config.poll_interval_s, 0.25))
        if last <= 0:
            raise ReplyFailed(f"the conversation at {url} shows no turns; refusing to continue it as a new chat", url)
        time.sleep(self.config.hydration_settle_s)
        state = self._probe(page)
        if conversation_id(state.url) != want:
            raise ReplyFailed(f"{url} moved to another conversation while loading ({state.url})", url)
        return state

    def _enter_project(self, call: _Call, page: Page, project: str) -> None:
        if project.startswith(("http://", "https://", "/")):
            self._open(call, page, urljoin(page.url, project))
            return
        deadline = time.monotonic() + self.config.drift_grace_s
        while True:
            with playwright_errors("looking for the project", self.config.action_timeout_s, page.url):
                args = {**self.profile.js_args(), "name": project}
                found = evaluate_bounded(page, PROJECT_JS, args, self.config.action_timeout_s)
            if found["href"]:
                self._open(call, page, found["href"])
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

    def _ensure_new_chat(self, call: _Call, page: Page) -> None:
        if not is_conversation_url(page.url):
            return
        # The base URL (or project page) normally is a new chat; some sessions redirect to the last one.
        sel = self._require(call, page, ["new_chat"], self.config.drift_grace_s, "starting a new chat")
        self._click(call, page, sel["new_chat"].candidate, "starting a new chat", self.config.action_timeout_s)
        with playwright_errors("starting a new chat", self.config.action_timeout_s, page.url):
            page.wait_for_url(lambda u: not is_conversation_url(u), timeout=self.config.action_timeout_s * 1000)

    # -- composing -----------------------------------------------------------------------------

    def _pick_model(self, call: _Call, page: Page, hint: str) -> None:
        """Pick the menu item matching ``hint`` and check the page confirms it. The model pill
        mounts seconds after the page, so it gets a longer grace than other selectors."""
        cfg = self.config
        call.stage = "compose"
        switcher = self._require(call, page, ["model_switcher"], cfg.model_picker_grace_s, "choosing the model")
        switch_sel = switcher["model_switcher"].candidate
        self._click(call, page, switch_sel, "opening the model menu", cfg.action_timeout_s)
        item = self._require(call, page, ["model_item"], cfg.drift_grace_s, "choosing the model")["model_item"]
        ms = cfg.action_timeout_s * 1000
        with playwright_errors("choosing the model", cfg.action_timeout_s, page.url):
            items = page.locator(item.candidate).filter(visible=True)
            items.first.wait_for(state="visible", timeout=ms)
            labels = [t.strip() for t in items.all_inner_texts()]
            firsts = [t.splitlines()[0].strip() if t else "" for t in labels]
            want = hint.casefold()
            exact = [i for i, t in enumerate(firsts) if t.casefold() == want]
            loose = [i for i, t in enumerate(labels) if want in t.casefold()]
            if not (exact or loose):
                page.keyboard.press("Escape")
                raise OptionNotFound("model_item", "model", hint, [t for t in firsts if t])
            chosen = firsts[(exact or loose)[0]]
            items.nth((exact or loose)[0]).click(timeout=ms)
        verified, shown = self._verify_model(page, switch_sel, chosen)
        call.model, call.model_verified = (chosen if verified else shown), verified
        if not verified:
            if cfg.require_model:
                raise ModelNotVerified(chosen, shown)
            call.note(f"model {chosen!r} was picked but the page did not confirm it (it shows {shown!r})")

    def _verify_model(self, page: Page, switcher: str, chosen: str) -> tuple[bool, str]:
        """Whether the model control now names ``chosen`` (or the reopened menu has it checked)."""
        cfg = self.config
        want = " ".join(chosen.split()).casefold()
        shown = ""
        deadline = time.monotonic() + cfg.drift_grace_s
        with playwright_errors("checking the chosen model", cfg.action_timeout_s, page.url):
            control = page.locator(switcher).filter(visible=True).first
            while True:
                shown = " ".join(control.inner_text(timeout=cfg.action_timeout_s * 1000).split())
                label = shown.casefold()
                if label.endswith(want) or (len(label) >= 3 and want.endswith(" " + label)):
                    return True, shown
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
            # The pill may show only a generic label: the menu's checked item is the authority.
            control.click(timeout=cfg.action_timeout_s * 1000)
            try:
                checked = self.profile.scan(page, ["model_checked"])["model_checked"]
                if checked is not None:
                    texts = page.locator(checked.candidate).filter(visible=True).all_inner_texts()
                    if any(t.strip() and t.strip().splitlines()[0].strip().casefold() == want for t in texts):
                        return True, shown
            finally:
                page.keyboard.press("Escape")
        return False, shown

    def _compose_packet(
        self, call: _Call, page: Page, prompt: str, files: list[Path], inline: str | None
    ) -> tuple[str, str]:
        """Type the inline packet when it fits, else (or when it is cut) the prompt plus files."""
        if inline is not None and len(inline) <= self.config.inline_limit_chars:
            try:
                self._compose(call, page, inline, [])
                return inline, "inline"
            except PromptTruncated as cut:
                if not files:
                    raise
                call.note(f"the inline prompt was cut ({cut.written} of {cut.expected} characters); sent as files")
                self._clear_composer(page)
        elif inline is not None:
            limit = self.config.inline_limit_chars
            call.note(f"the inline prompt has {len(inline)} characters (limit {limit}); sent as files")
        self._compose(call, page, prompt, files)
        return prompt, "files" if files else "inline"

    def _composer(self, call: _Call, page: Page) -> str:
        found = self._require(call, page, ["composer"], self.config.drift_grace_s, "writing the prompt")
        return found["composer"].candidate

    def _clear_composer(self, page: Page) -> None:
        composer = self.profile.scan(page, ["composer"])["composer"]
        if composer is not None:
            with playwright_errors("clearing the composer", self.config.action_timeout_s, page.url):
                page.locator(composer.candidate).filter(visible=True).first.fill(
                    "", timeout=self.config.action_timeout_s * 1000
                )

    def _compose(self, call: _Call, page: Page, text: str, files: Sequence[Path]) -> None:
        cfg = self.config
        call.stage = "compose"
        composer = self._composer(call, page)
        with playwright_errors("removing draft attachments", cfg.action_timeout_s, page.url):
            removed = evaluate_bounded(page, CLEAR_DRAFT_JS, self.profile.js_args(), cfg.action_timeout_s)
        if removed:
            call.note(f"removed {removed} draft attachment(s) left in the composer")
            time.sleep(0.2)
        for i, path in enumerate(files):
            self._upload(call, page, path, [p.name for p in files[: i + 1]])
        ms = cfg.action_timeout_s * 1000
        expected = len(_nonws(text))
        for attempt in range(2):
            self._click(call, page, composer, "focusing the composer", cfg.action_timeout_s)
            with playwright_errors("writing the prompt", cfg.action_timeout_s, page.url):
                # fill inserts in one step; per-key typing is too slow for long prompts.
                page.locator(composer).filter(visible=True).first.fill(text, timeout=ms)
            written = self._probe(page).composer_chars
            if written or not expected or attempt:
                break
            time.sleep(0.5)  # an empty composer right after writing: a hydration reset wiped it
        if expected and not written:
            raise SelectorDrift(
                ["composer"],
                f"the composer ({composer}) stayed empty after writing {len(text)} characters",
                step="writing the prompt",
            )
        if expected - written > max(20, expected // 500):
            raise PromptTruncated(written, expected)

    def _upload(self, call: _Call, page: Page, path: Path, names: list[str]) -> None:
        """Hand one file to the general file input and wait for its chip to finish uploading."""
        cfg = self.config
        args = self.profile.js_args()
        with playwright_errors("finding the file input", cfg.action_timeout_s, page.url):
            marked = evaluate_bounded(page, MARK_FILE_INPUT_JS, args, cfg.action_timeout_s)
        if not marked["found"]:
            attach = self._require(call, page, ["attach_button"], cfg.drift_grace_s, "attaching files")
            self._click(call, page, attach["attach_button"].candidate, "opening the attach menu", cfg.action_timeout_s)
            deadline = time.monotonic() + cfg.drift_grace_s
            while not marked["found"] and time.monotonic() < deadline:
                time.sleep(0.1)
                with playwright_errors("finding the file input", cfg.action_timeout_s, page.url):
                    marked = evaluate_bounded(page, MARK_FILE_INPUT_JS, args, cfg.action_timeout_s)
            if not marked["found"]:
                skipped = f" ({marked['imageOnly']} image-only input(s) skipped)" if marked["imageOnly"] else ""
                raise SelectorDrift(
                    ["file_input"],
                    self.profile.drift_report(["file_input"], page.url) + f"\nno general file input{skipped}",
                    step="attaching files",
                )
        call.saw(self.profile, self.profile.scan(page, ["file_input"]))
        with playwright_errors(f"attaching {path.name}", cfg.action_timeout_s, page.url):
            page.locator('[data-planegate-file="1"]').set_input_files(str(path), timeout=cfg.action_timeout_s * 1000)
        deadline = time.monotonic() + cfg.upload_timeout_s
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with playwright_errors("waiting for the upload", cfg.action_timeout_s, page.url):
                seen = evaluate_bounded(page, CHIPS_JS, {**args, "names": names}, cfg.action_timeout_s)
            if all(seen["found"].values()) and not seen["uploading"]:
                return
            time.sleep(0.1)
        missing = [n for n, ok in seen.get("found", {}).items() if not ok]
        raise DeadlineExceeded(
            f"uploading {path.name} (chips seen: {seen.get('chips')}; missing {missing or 'none, still uploading'})",
            cfg.upload_timeout_s,
            page.url,
        )

    # -- sending -------------------------------------------------------------------------------

    def _send(self, call: _Call, page: Page, text: str, before: PageState, *, uploading: bool) -> float:
        """Click send and confirm the prompt landed; press Enter once if the click was swallowed."""
        cfg = self.config
        call.stage = "send"
        send = self._require(call, page, ["send"], cfg.drift_grace_s, "sending")["send"].candidate
        # The send button stays disabled while attachments upload; the click waits for it to enable.
        wait_s = cfg.upload_timeout_s if uploading else cfg.action_timeout_s
        self._click(call, page, send, "waiting for the send button to enable", wait_s)
        sent_at = time.time()
        if self._committed(call, page, text, before):
            return sent_at
        state = self._probe(page)
        if state.user_turns == before.user_turns and state.composer_chars:
            composer = self._composer(call, page)
            with playwright_errors("pressing Enter to send", cfg.action_timeout_s, page.url):
                page.locator(composer).filter(visible=True).first.press("Enter", timeout=cfg.action_timeout_s * 1000)
            call.note("the send click did not land; pressed Enter once")
            sent_at = time.time()
            if self._committed(call, page, text, before):
                return sent_at
            state = self._probe(page)
        detail = (
            f"no new user turn within {cfg.send_confirm_s:.0f} s after clicking send and pressing Enter "
            f"(user turns {before.user_turns} → {state.user_turns}, composer holds {state.composer_chars} characters)"
        )
        raise SendNotCommitted(state.url, detail)

    def _committed(self, call: _Call, page: Page, text: str, before: PageState) -> bool:
        """A new user turn with the prompt's start, or a cleared composer plus visible progress."""
        want = _nonws(text)[:40]
        deadline = time.monotonic() + self.config.send_confirm_s
        while True:
            state = self._probe(page)
            if state.stop_match is not None:
                call.saw(self.profile, {"stop": state.stop_match})
            if state.user_turns > before.user_turns and want in state.last_user:
                return True
            moved = conversation_id(state.url) is not None and state.url != before.url
            if not state.composer_chars and (state.stop or state.busy or state.turns > before.turns or moved):
                return True
            if state.usage_cap:
                raise UsageCapReached(state.usage_cap, state.url)
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self.config.poll_interval_s, 0.1))

    # -- completion --------------------------------------------------------------------------

    def _await_reply(
        self,
        call: _Call,
        page: Page,
        *,
        min_turns: int,
        sent_at: float,
        on_sent: Callable[[str], None] | None,
        reading: bool = False,
    ) -> BridgeReply:
        """Poll until the reply in assistant turn ``min_turns`` (or later) is proven finished."""
        cfg = self.config
        call.stage = "wait"
        thinking_s, reply_s = (cfg.reread_timeout_s, cfg.reread_timeout_s) if reading else cfg.deadlines()
        marker = cfg.end_marker
        start = time.monotonic()
        reported: str | None = None
        conversation_url = ""
        first_text: float | None = None
        last_key: tuple[int, int, int] | None = None
        last_change = start
        bar_polls = fail_polls = 0
        settled_at_open: bool | None = None
        proven_since: float | None = None
        body_missing_since: float | None = None
        beat: tuple[str, str | None] | None = None
        last_beat = 0.0
        while True:
            state = self._probe(page)
            now = time.monotonic()
            durable = conversation_id(state.url)
            if durable is not None:
                conversation_url = state.url
                if on_sent is not None and durable != reported:
                    reported = durable
                    on_sent(state.url)
            if state.stop_match is not None:
                call.saw(self.profile, {"stop": state.stop_match})
            ours = state.turns >= min_turns and not state.pending_user
            fail_polls = fail_polls + 1 if ours and (state.error or (state.retry and not state.actions)) else 0
            self._raise_for_failure(state, ours, fail_polls)
            if ours and state.text_len and first_text is None:
                first_text = now
            key = (state.turns, state.text_len, state.text_hash)
            same = key == last_key
            if not same:
                last_key, last_change = key, now
            # Both clocks can only under-estimate the real quiet time, so the larger one is safe.
            quiet = max(now - last_change, state.quiet_s or 0.0)
            looks_done = ours and state.text_len > 0 and state.actions and not state.active
            if settled_at_open is None:
                settled_at_open = reading and looks_done
            elif not same or not looks_done:
                settled_at_open = False
            bar_polls = bar_polls + 1 if looks_done and same else 0
            proof = None
            if looks_done:
                if marker and state.marker_at_end and bar_polls >= 1 and quiet >= cfg.marker_quiet_s:
                    proof = "end marker"
                elif bar_polls >= cfg.bar_confirm_polls:
                    needed = cfg.unmarked_quiet_s if marker and not settled_at_open else cfg.stable_for_s
                    proof = "quiet" if quiet >= needed else None
            if proof is not None:
                # A reply may finish before its durable URL shows; give the URL a moment, then go.
                proven_since = proven_since or now
                if on_sent is None or reported is not None or now - proven_since >= cfg.action_timeout_s:
                    if on_sent is not None and reported is None:
                        call.note("no durable conversation URL appeared; the reply cannot be re-read later")
                    return self._finish(call, page, conversation_url, sent_at, time.time() - quiet, proof)
            else:
                proven_since = None
            body_missing_since = (body_missing_since or now) if ours and state.actions and not state.has_body else None
            body_missing = None if body_missing_since is None else now - body_missing_since
            self._raise_for_drift(state, ours, now - start, quiet, body_missing, reading)

            stage = "thinking" if not state.text_len or not ours else "finishing" if looks_done else "writing"
            if call.on_progress is not None and ((stage, state.status) != beat or now - last_beat >= cfg.heartbeat_s):
                beat, last_beat = (stage, state.status), now
                call.on_progress(Progress(stage, state.status, now - start, state.text_len, quiet, conversation_url))
            elapsed = now - start
            late = None
            if first_text is None and elapsed >= thinking_s:
                late = ("waiting for the reply to start (thinking)", thinking_s)
            elif elapsed >= reply_s:
                late = ("waiting for the reply to finish", reply_s)
            if late is not None:
                if conversation_url:
                    raise ReplyPending(conversation_url, elapsed, state.status or stage, late[0])
                raise DeadlineExceeded(
                    late[0], late[1], state.url, "no durable conversation URL is known, so it cannot be re-read"
                )
            pause = cfg.poll_interval_s
            if proof is None and looks_done and marker and state.marker_at_end:
                # Wake when the text will have been quiet long enough, not at the next poll tick,
                # so finished→detected stays close to marker_quiet_s.
                pause = min(pause, max(cfg.marker_quiet_s - quiet, 0.0))
            time.sleep(max(pause, 0.01))

    def _raise_for_failure(self, state: PageState, ours: bool, fail_polls: int) -> None:
        """Page states that end the wait: challenge, logout, usage cap, a failed reply."""
        if state.cf_strong:
            raise CloudflareChallenge(state.url, state.cf_evidence)
        if state.logged_out and not state.composer:
            raise LoggedOut(state.url)
        # ChatGPT often shows the cap notice right after the last allowed reply: a reply that is
        # streaming or finished is still read; only a prompt left without one is refused.
        if state.usage_cap and not (ours and state.text_len and (state.active or state.actions)):
            raise UsageCapReached(state.usage_cap, state.url)
        # A retry control can flash during streaming; only one that persists is a failure.
        if fail_polls >= self.config.failure_confirm_polls:
            raise ReplyFailed(state.error or "a Retry control appeared before the reply finished", state.url)

    def _raise_for_drift(
        self, state: PageState, ours: bool, waited: float, quiet: float, body_missing: float | None, reading: bool
    ) -> None:
        """Selectors that should have matched by now: report them instead of waiting on."""
        cfg = self.config
        if not ours and not state.stop and not state.busy and waited >= cfg.action_timeout_s:
            if reading:
                raise ReplyFailed("the conversation's last prompt has no assistant reply", state.url)
            names = ["assistant_turn", "stop"]
            raise SelectorDrift(
                names,
                self.profile.drift_report(names, state.url)
                + f"\nneither a new assistant turn nor a stop control appeared {cfg.action_timeout_s:.0f} s "
                "after the send was confirmed",
                step="waiting for the reply",
            )
        if body_missing is not None and body_missing >= cfg.drift_grace_s:
            raise SelectorDrift(
                ["reply_body"], self.profile.drift_report(["reply_body"], state.url), step="reading the reply"
            )
        # A settled preamble also looks like this for a while, so only a long quiet is drift.
        drift_quiet = max(2 * cfg.action_timeout_s, cfg.unmarked_quiet_s + cfg.action_timeout_s)
        if ours and state.text_len and not state.active and not state.actions and quiet >= drift_quiet:
            raise SelectorDrift(
                ["finished_actions"],
                self.profile.drift_report(["finished_actions"], state.url)
                + f"\nthe reply stopped changing {quiet:.0f} s ago and nothing shows activity",
                step="waiting for the reply to finish",
            )

    def _finish(self, call: _Call, page: Page, url: str, sent_at: float, finished_at: float, proof: str) -> BridgeReply:
        detected_at = time.time()
        call.stage = "read"
        timeout = self.config.action_timeout_s
        args = self.profile.js_args()
        markdown: str | None = None
        read_via = "copy"
        try:
            copied = evaluate_async_bounded(page, COPY_JS, {**args, "timeoutMs": 2000}, timeout)
        except Exception as exc:  # noqa: BLE001 - any failure of the copy path falls back to the DOM
            copied = {"status": f"copy failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"}
        if copied.get("status") == "ok":
            text = str(copied["text"])
            # A copy of another turn, or a partial one, is worse than the DOM: check it is all there.
            marker_ok = not (self.config.end_marker and self.config.end_marker not in text and proof == "end marker")
            if text.strip() and len(_nonws(text)) >= 0.8 * int(copied.get("domChars") or 0) and marker_ok:
                markdown = text if text.endswith("\n") else text + "\n"
            else:
                call.note("the copy button gave a partial text; read the reply from the page instead")
        else:
            call.note(f"the copy button gave nothing ({copied.get('status')}); read the reply from the page")
        if markdown is None:
            read_via = "dom"
            with playwright_errors("reading the reply", timeout, url):
                markdown = evaluate_bounded(page, MARKDOWN_JS, args, timeout)
            if markdown is None:
                raise SelectorDrift(
                    ["reply_body"], self.profile.drift_report(["reply_body"], url), step="reading the reply"
                )
        call.saw(self.profile, self.profile.scan(page, READ_NAMES))
        return BridgeReply(
            markdown=markdown,
            conversation_url=url,
            sent_at=sent_at,
            finished_at=finished_at,
            detected_at=detected_at,
            read_via=read_via,
            proof=proof,
            model=call.model,
            model_verified=call.model_verified,
            fallbacks=list(call.fallbacks.values()),
            notes=list(call.notes),
        )
