"""``doctor``: what the bridge would find in the browser right now, without sending anything.

It probes every candidate endpoint the caller's config names (the caller reads its policy for
them, and for the base URL), opens one page on the base URL, and reports login state (positive
proof: the account's profile control or the session endpoint naming a user), Cloudflare (only
an interstitial's own signs count; the bot-management script on a healthy page is noted, not
failed), a "Welcome back" account picker, usage-cap banners and, per named selector, the
candidate that matched or that the name is missing. A name matched only by a later candidate is
shown as "fallback in use", and so is every fallback a recent review recorded. Selectors only
present in some states (a streaming reply, an open menu) are reported as information, not
failures. To see the send button it writes a probe text into the composer and clears it again;
it never clicks send. It takes no lease: it uses its own page and changes nothing a running
review depends on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .browser import EndpointInfo, probe_all
from .config import BridgeConfig, Fallback
from .errors import BridgeError
from .pagejs import DISMISS_JS, SESSION_JS, SESSION_PATH
from .probe import PageState, probe
from .selectors import Match, Profile
from .session import PageSession, evaluate_async_bounded, evaluate_bounded, playwright_errors

if TYPE_CHECKING:
    from playwright.sync_api import Page

# Must match on a ready page, or the bridge cannot send.
REQUIRED = ("composer", "send")
# Expected on a ready page; the bridge works around some (attach via the plus button).
EXPECTED = ("file_input", "attach_button", "model_switcher", "new_chat", "logged_in", "app_shell")
# Present only in some states; absence now is not a fault.
SITUATIONAL = (
    "stop",
    "assistant_turn",
    "user_turn",
    "turn_container",
    "reply_body",
    "finished_actions",
    "turn_copy",
    "busy",
    "status_node",
    "attachment_chip",
    "attachment_remove",
    "upload_busy",
    "model_item",
    "model_checked",
    "project_link",
    "dialog",
)
# Alarms: a match is the finding.
ALARMS = ("logged_out", "cloudflare", "retry", "error_banner")
PROBE_TEXT = "planegate doctor: checking the composer (not sent)"


@dataclass(frozen=True)
class SelectorCheck:
    name: str
    role: str  # required | expected | situational | alarm
    match: Match | None
    note: str = ""
    primary: str = ""  # the name's first candidate

    @property
    def ok(self) -> bool:
        if self.role == "alarm":
            return self.match is None or not self.match.visible
        return self.role != "required" or self.match is not None

    @property
    def fallback(self) -> bool:
        return self.role != "alarm" and self.match is not None and self.match.fallback


@dataclass
class DoctorReport:
    endpoints: list[tuple[str, str]] = field(default_factory=list)  # (candidate, "ok …" or why not)
    endpoint: str | None = None
    browser_version: str | None = None
    page_url: str | None = None
    logged_in: bool | None = None
    login_proof: str = ""  # what proved (or disproved) the login
    cloudflare: bool = False
    cloudflare_evidence: str = ""
    account_chooser: bool = False  # a "Welcome back" account picker is shown
    usage_cap: bool = False  # a usage-cap / rate-limit banner is shown
    usage_cap_text: str | None = None
    selectors: list[SelectorCheck] = field(default_factory=list)
    recorded_fallbacks: list[tuple[Fallback, str]] = field(default_factory=list)  # (fallback, when) from reviews
    profile_version: int = 0
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def missing(self) -> list[str]:
        """Names that should match on a ready page but do not (situational ones excluded)."""
        return [c.name for c in self.selectors if c.role in ("required", "expected") and c.match is None]

    @property
    def fallbacks(self) -> list[Fallback]:
        """Every fallback in use: seen on the page now, or recorded by a recent review."""
        now = [Fallback(c.name, c.primary, c.match.candidate) for c in self.selectors if c.fallback and c.match]
        return [*now, *(fb for fb, _ in self.recorded_fallbacks)]

    @property
    def ok(self) -> bool:
        return (
            self.endpoint is not None
            and self.error is None
            and self.logged_in is True
            and not self.cloudflare
            and not self.account_chooser
            and not self.usage_cap
            and all(c.ok for c in self.selectors)
        )

    def render(self) -> str:
        """One line per check: ``ok``/``FAIL``/``WARN``/``info``, what was checked, what was found."""
        lines: list[str] = []

        def line(status: str, what: str, detail: str) -> None:
            lines.append(f"{status:<5} {what:<28} {detail}")

        for url, result in self.endpoints:
            line("ok" if result.startswith("ok") else "info", f"endpoint {url}", result)
        if self.endpoint is None:
            line("FAIL", "endpoint", "no candidate answered; run `planegate browser launch` (see the README)")
        if self.browser_version:
            line("ok", "browser", self.browser_version)
        if self.page_url is not None:
            line("ok", "page", self.page_url)
        if self.logged_in is not None or self.endpoint is not None:
            state = {True: "logged in", False: "not logged in: log in once in that browser", None: "unknown"}
            proof = f" ({self.login_proof})" if self.login_proof else ""
            line("ok" if self.logged_in else "FAIL", "login", state[self.logged_in] + proof)
        cf = f"challenge shown ({self.cloudflare_evidence})" if self.cloudflare else "none"
        line("FAIL" if self.cloudflare else "ok", "cloudflare", cf)
        if self.account_chooser:
            line("FAIL", "account picker", "'Welcome back' picker shown: choose the account once in that browser")
        line("FAIL" if self.usage_cap else "ok", "usage cap", repr(self.usage_cap_text) if self.usage_cap else "none")
        for check in self.selectors:
            if check.match is not None:
                seen = "visible" if check.match.visible else "hidden"
                found = f"{check.match.candidate} ({check.match.count}, {seen})"
            else:
                found = "missing"
            if check.role == "alarm":
                status = "ok" if check.ok else "FAIL"
                found = "not shown" if check.match is None else found
            elif check.match is None:
                status = "FAIL" if check.role == "required" else "info"
            elif check.fallback:
                status = "WARN"
                found = f"fallback in use: primary {check.primary} matched nothing; {found}"
            else:
                status = "ok"
            line(status, f"selector {check.name}", found + (f" — {check.note}" if check.note else ""))
        for fb, when in self.recorded_fallbacks:
            line("WARN", f"selector {fb.name}", f"fallback in use (seen by a review {when}): {fb.render()}")
        for note in self.notes:
            line("info", "note", note)
        if self.error:
            line("FAIL", "error", self.error)
        line("ok" if self.ok else "FAIL", "overall", f"profile version {self.profile_version}")
        return "\n".join(lines)


def recorded_fallbacks(path: Path | None) -> list[tuple[Fallback, str]]:
    """Fallbacks reviews recorded (``chatgpt.FALLBACKS_FILE``); unreadable files count as none."""
    if path is None or not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    out = []
    for name, item in sorted(data.items()):
        if isinstance(item, dict) and isinstance(item.get("primary"), str) and isinstance(item.get("used"), str):
            out.append((Fallback(name, item["primary"], item["used"]), str(item.get("at", ""))))
    return out


def run_doctor(
    config: BridgeConfig, profile: Profile, base_url: str, fallbacks_file: Path | None = None
) -> DoctorReport:
    """The report for ``config.endpoints`` and ``base_url`` (both as the caller's policy says)."""
    report = DoctorReport(profile_version=profile.version, recorded_fallbacks=recorded_fallbacks(fallbacks_file))
    if profile.override_path is not None:
        report.notes.append(
            f"override {profile.override_path} (version {profile.override_version}) replaces: "
            f"{', '.join(profile.overridden) or 'nothing'}"
        )
        if (profile.override_version or 0) < profile.packaged_version:
            report.notes.append("the override is older than the packaged profile; check it still applies")
    found: EndpointInfo | None = None
    for url, result in probe_all(config.endpoints):
        if isinstance(result, EndpointInfo):
            report.endpoints.append((url, f"ok {result.describe()}"))
            found = found or result
        else:
            report.endpoints.append((url, result))
    if found is None:
        return report
    report.endpoint, report.browser_version = found.url, found.browser or None
    try:
        with PageSession(
            [found.url],
            None,
            lease_timeout_s=0,
            connect_timeout_s=config.action_timeout_s,
            attach_timeout_s=config.attach_timeout_s,
        ) as session:
            report.browser_version = session.browser_version or report.browser_version
            _inspect(session.page, config, profile, base_url, report)
    except BridgeError as exc:
        report.error = str(exc)
    return report


def _wait_ready(page: Page, config: BridgeConfig, profile: Profile, report: DoctorReport) -> tuple[PageState, bool]:
    """Poll until the page shows what it is: challenge, login control, picker, or composer.
    Also says whether script-only challenge evidence outlasted the hydration grace."""
    start = time.monotonic()
    weak_since: float | None = None
    while True:
        state = probe(page, profile, config.action_timeout_s)
        now = time.monotonic()
        if state.dialog is not None and not state.dialog["welcome"]:
            with playwright_errors("closing a dialog", config.action_timeout_s, page.url):
                done = evaluate_bounded(page, DISMISS_JS, profile.js_args(), config.action_timeout_s)
            if done["dismissed"]:
                report.notes.append(f"closed a dialog ({done['text'][:60]!r}) with {done['dismissed']!r}")
                continue
        weak_since = (weak_since or now) if state.cf_weak else None
        weak_settled = weak_since is not None and now - weak_since >= config.cloudflare_grace_s
        shown = state.cf_strong or weak_settled or state.logged_out or state.composer
        if shown or (state.dialog or {}).get("welcome"):
            return state, weak_settled
        if weak_since is None and now - start >= config.action_timeout_s:
            return state, weak_settled
        time.sleep(0.1)


def _inspect(page: Page, config: BridgeConfig, profile: Profile, base_url: str, report: DoctorReport) -> None:
    with playwright_errors(f"loading {base_url}", config.navigation_timeout_s, base_url):
        page.goto(base_url, wait_until="domcontentloaded", timeout=config.navigation_timeout_s * 1000)
    state, weak_settled = _wait_ready(page, config, profile, report)
    if state.composer and not state.logged_out:
        # Let late parts of the page (profile control, model pill) render before judging them missing.
        grace = max(config.drift_grace_s, config.model_picker_grace_s)
        profile.require(page, EXPECTED, grace, step="", raise_missing=False)
        state = probe(page, profile, config.action_timeout_s)
    report.page_url = state.url
    report.cloudflare = state.cf_strong or (state.cf_weak and weak_settled)
    report.cloudflare_evidence = state.cf_evidence
    report.account_chooser = bool((state.dialog or {}).get("welcome"))
    report.usage_cap = state.usage_cap is not None
    report.usage_cap_text = state.usage_cap
    report.logged_in, report.login_proof = _login(page, config, state, report.cloudflare)

    names = [n for n in (*REQUIRED, *EXPECTED, *SITUATIONAL, *ALARMS) if n != "send"]
    scanned = profile.scan(page, names)
    if scanned.get("app_shell") is not None and profile.scan(page, ["cloudflare_script"])["cloudflare_script"]:
        report.notes.append("Cloudflare's bot-management script is on the page (normal on healthy pages)")
    send_match, send_note = _check_send(page, config, profile, scanned.get("composer"))
    scanned["send"] = send_match
    roles = {**dict.fromkeys(REQUIRED, "required"), **dict.fromkeys(EXPECTED, "expected")}
    roles |= {**dict.fromkeys(SITUATIONAL, "situational"), **dict.fromkeys(ALARMS, "alarm")}
    for name in (*REQUIRED, *EXPECTED, *SITUATIONAL, *ALARMS):
        note = send_note if name == "send" else ""
        by_name = bool(config.project) and not str(config.project).startswith(("http://", "https://", "/"))
        if name == "project_link" and by_name and scanned[name] is None:
            roles[name], note = "required", f"project {config.project!r} is configured by name"
        if name == "model_switcher" and config.model_hint and scanned[name] is None:
            roles[name], note = "required", f"model hint {config.model_hint!r} is configured"
        report.selectors.append(SelectorCheck(name, roles[name], scanned[name], note, profile.candidates(name)[0]))


def _login(page: Page, config: BridgeConfig, state: PageState, challenged: bool) -> tuple[bool | None, str]:
    """Positive proof only: a composer alone is what a guest page shows too."""
    from playwright.sync_api import Error as PlaywrightError

    if (state.dialog or {}).get("welcome"):
        return False, "the 'Welcome back' account picker is shown"
    if challenged:
        return None, "hidden by the challenge"
    if state.logged_out:
        return False, "a login control is shown"
    if state.logged_in:
        return True, "the account's profile control is shown"
    timeout = min(config.action_timeout_s, 10.0)
    try:
        found = evaluate_async_bounded(page, SESSION_JS, {"path": SESSION_PATH, "timeoutMs": timeout * 900}, timeout)
    except PlaywrightError:
        found = {}
    if isinstance(found, dict) and found.get("user") is True:
        return True, "the session endpoint names a user"
    if isinstance(found, dict) and found.get("user") is False:
        return False, "a guest page: a composer, but the session has no account"
    return (False if state.composer else None), "no profile control, and the session endpoint gave no answer"


def _check_send(page: Page, config: BridgeConfig, profile: Profile, composer: Match | None) -> tuple[Match | None, str]:
    """The send button usually appears only once the composer holds text: write, look, clear."""
    if composer is None:
        return None, "not checked: no composer"
    ms = config.action_timeout_s * 1000
    box = page.locator(composer.candidate).filter(visible=True).first
    with playwright_errors("writing a probe text into the composer", config.action_timeout_s, page.url):
        box.fill(PROBE_TEXT, timeout=ms)
    try:
        found = profile.require(page, ["send"], config.drift_grace_s, step="", raise_missing=False)
        match = found.get("send")
    finally:
        with playwright_errors("clearing the composer", config.action_timeout_s, page.url):
            box.fill("", timeout=ms)
    return match, "checked with probe text in the composer (not sent)"
