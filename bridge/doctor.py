"""``doctor``: what the bridge would find in the browser right now, without sending anything.

It probes every candidate endpoint, opens one page on the base URL, and reports login state,
Cloudflare, usage-cap banners and, per named selector, the candidate that matched or that the
name is missing. Selectors only present in some states (a streaming reply, an open menu) are
reported as information, not failures. To see the send button it writes a probe text into the
composer and clears it again; it never clicks send. It takes no lease: it uses its own page and
changes nothing a running review depends on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .browser import EndpointInfo, probe_all
from .errors import BridgeError
from .selectors import Match, Profile
from .session import PageSession

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from .chatgpt import BridgeConfig, PageState

# Must match on a ready page, or the bridge cannot send.
REQUIRED = ("composer", "send")
# Expected on a ready page; the bridge works around some (attach via the plus button).
EXPECTED = ("file_input", "attach_button", "model_switcher", "new_chat")
# Present only in some states; absence now is not a fault.
SITUATIONAL = (
    "stop",
    "assistant_turn",
    "user_turn",
    "turn_container",
    "reply_body",
    "finished_actions",
    "model_item",
    "project_link",
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

    @property
    def ok(self) -> bool:
        if self.role == "alarm":
            return self.match is None or not self.match.visible
        return self.role != "required" or self.match is not None


@dataclass
class DoctorReport:
    endpoints: list[tuple[str, str]] = field(default_factory=list)  # (candidate, "ok …" or why not)
    endpoint: str | None = None
    browser_version: str | None = None
    page_url: str | None = None
    logged_in: bool | None = None
    cloudflare: bool = False
    usage_cap: bool = False  # a usage-cap / rate-limit banner is shown
    usage_cap_text: str | None = None
    selectors: list[SelectorCheck] = field(default_factory=list)
    profile_version: int = 0
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def missing(self) -> list[str]:
        """Names that should match on a ready page but do not (situational ones excluded)."""
        return [c.name for c in self.selectors if c.role in ("required", "expected") and c.match is None]

    @property
    def ok(self) -> bool:
        return (
            self.endpoint is not None
            and self.error is None
            and self.logged_in is True
            and not self.cloudflare
            and not self.usage_cap
            and all(c.ok for c in self.selectors)
        )

    def render(self) -> str:
        """One line per check: ``ok``/``FAIL``/``info``, what was checked, what was found."""
        lines: list[str] = []

        def line(status: str, what: str, detail: str) -> None:
            lines.append(f"{status:<5} {what:<28} {detail}")

        for url, result in self.endpoints:
            line("ok" if result.startswith("ok") else "info", f"endpoint {url}", result)
        if self.endpoint is None:
            line("FAIL", "endpoint", "no candidate answered; run `planegate browser launch`")
        if self.page_url is not None:
            line("ok", "page", self.page_url)
        if self.logged_in is not None or self.endpoint is not None:
            state = {True: "logged in", False: "logged out: log in once in that browser", None: "unknown"}
            line("ok" if self.logged_in else "FAIL", "login", state[self.logged_in])
        line("FAIL" if self.cloudflare else "ok", "cloudflare", "challenge shown" if self.cloudflare else "none")
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
            else:
                status = "ok"
            line(status, f"selector {check.name}", found + (f" — {check.note}" if check.note else ""))
        for note in self.notes:
            line("info", "note", note)
        if self.error:
            line("FAIL", "error", self.error)
        line("ok" if self.ok else "FAIL", "overall", f"profile version {self.profile_version}")
        return "\n".join(lines)


def run_doctor(config: BridgeConfig, profile: Profile, base_url: str) -> DoctorReport:
    report = DoctorReport(profile_version=profile.version)
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
            report.endpoints.append((url, f"ok {result.browser}"))
            found = found or result
        else:
            report.endpoints.append((url, result))
    if found is None:
        return report
    report.endpoint, report.browser_version = found.url, found.browser
    try:
        with PageSession([found.url], None, lease_timeout_s=0, connect_timeout_s=config.action_timeout_s) as s:
            _inspect(s.page, config, profile, base_url, report)
    except BridgeError as exc:
        report.error = str(exc)
    return report


def _inspect(page: Page, config: BridgeConfig, profile: Profile, base_url: str, report: DoctorReport) -> None:
    from .chatgpt import PageState
    from .pagejs import PROBE_JS
    from .session import evaluate_bounded, playwright_errors

    with playwright_errors(f"loading {base_url}", config.navigation_timeout_s, base_url):
        page.goto(base_url, wait_until="domcontentloaded", timeout=config.navigation_timeout_s * 1000)
    deadline = time.monotonic() + config.action_timeout_s
    while True:
        with playwright_errors("reading the page", config.action_timeout_s, page.url):
            raw = evaluate_bounded(page, PROBE_JS, profile.js_args(), config.action_timeout_s)
        state: PageState = PageState.from_js(raw)
        if state.cloudflare or state.logged_out or state.composer or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if state.composer and not state.logged_out:
        # Let late parts of the page (sidebar, model switcher) render before judging them missing.
        profile.require(page, EXPECTED, config.drift_grace_s, step="", raise_missing=False)
    report.page_url = state.url
    report.cloudflare = state.cloudflare
    report.usage_cap = state.usage_cap is not None
    report.usage_cap_text = state.usage_cap
    report.logged_in = None if state.cloudflare else (state.composer and not state.logged_out)

    names = [n for n in (*REQUIRED, *EXPECTED, *SITUATIONAL, *ALARMS) if n != "send"]
    scanned = profile.scan(page, names)
    send_match, send_note = _check_send(page, config, profile, scanned.get("composer"))
    scanned["send"] = send_match
    roles = {**dict.fromkeys(REQUIRED, "required"), **dict.fromkeys(EXPECTED, "expected")}
    roles |= {**dict.fromkeys(SITUATIONAL, "situational"), **dict.fromkeys(ALARMS, "alarm")}
    for name in (*REQUIRED, *EXPECTED, *SITUATIONAL, *ALARMS):
        note = send_note if name == "send" else ""
        if name == "project_link" and config.project and scanned[name] is None:
            roles[name], note = "required", f"project {config.project!r} is configured"
        if name == "model_switcher" and config.model_hint and scanned[name] is None:
            roles[name], note = "required", f"model hint {config.model_hint!r} is configured"
        report.selectors.append(SelectorCheck(name, roles[name], scanned[name], note))


def _check_send(page: Page, config: BridgeConfig, profile: Profile, composer: Match | None) -> tuple[Match | None, str]:
    """The send button usually appears only once the composer holds text: write, look, clear."""
    from .session import playwright_errors

    if composer is None:
        return None, "not checked: no composer"
    ms = config.action_timeout_s * 1000
    box = page.locator(composer.candidate).first
    with playwright_errors("writing a probe text into the composer", config.action_timeout_s, page.url):
        box.fill(PROBE_TEXT, timeout=ms)
    try:
        found = profile.require(page, ["send"], config.drift_grace_s, step="", raise_missing=False)
        match = profile.scan(page, ["send"])["send"] if found else None
    finally:
        with playwright_errors("clearing the composer", config.action_timeout_s, page.url):
            box.fill("", timeout=ms)
    return match, "checked with probe text in the composer (not sent)"
