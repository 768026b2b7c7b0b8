"""The bridge's settings and the values it hands back: plain data, no browser, no Playwright.

Timing knobs live here so a user calibrating against the live site changes data, not code (the
same idea as the selector profile). Long thinking is per model: a hint naming a Pro or Deep
Research model gets a thinking deadline of up to an hour, because those models think for 10-60
minutes before writing anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# Model-hint words → the thinking/reply deadline (s) such a model needs at least.
LONG_THINKING: dict[str, float] = {"deep research": 3600.0, "pro": 3600.0, "thinking": 1800.0, "heavy": 3600.0}


@dataclass
class BridgeConfig:
    endpoints: list[str]  # CDP candidates (URLs, ports, or browser profile folders), already resolved
    base_url: str | None = None  # default: the profile's base_url
    project: str | None = None  # project URL (preferred) or sidebar project name to start in
    model_hint: str | None = None  # text of the model-menu item to pick
    require_model: bool = False  # refuse to send when the picked model cannot be verified on the page
    account_email: str | None = None  # the account to choose on a "Welcome back" picker
    selectors_override: Path | None = None
    poll_interval_s: float = 0.25
    # Completion. The prompt's own end marker, seen near the end of the reply, is the strongest
    # proof; without it, a longer quiet guards against a settled preamble (see chatgpt.py).
    end_marker: str | None = None
    marker_quiet_s: float = 0.3  # reply unchanged this long, end marker present
    stable_for_s: float = 2.0  # reply unchanged this long when no end marker was asked for
    unmarked_quiet_s: float = 30.0  # reply unchanged this long when the asked-for end marker is absent
    bar_confirm_polls: int = 3  # finished-turn actions seen on this many consecutive unchanged polls
    failure_confirm_polls: int = 3  # an error banner / retry control must persist this many polls
    thinking_timeout_s: float = 600  # no assistant text yet
    reply_timeout_s: float = 1800  # whole reply
    model_timeouts: dict[str, float] = field(default_factory=lambda: dict(LONG_THINKING))
    reread_timeout_s: float = 60  # read_reply waits this long for a reply still coming, then ReplyPending
    action_timeout_s: float = 15  # clicks, selector waits, page readiness
    drift_grace_s: float = 2.0  # how long a needed selector may take to appear on a ready page
    model_picker_grace_s: float = 8.0  # the model pill mounts seconds after the page
    cloudflare_grace_s: float = 12.0  # script-only challenge evidence must outlast hydration
    login_grace_s: float = 5.0  # the profile control may mount after the composer
    hydration_settle_s: float = 1.0  # a reopened conversation's turns stable, then this much more
    send_confirm_s: float = 8.0  # a new user turn (or cleared composer + progress) must show by then
    navigation_timeout_s: float = 45
    upload_timeout_s: float = 120  # each attached file must finish uploading within this
    inline_limit_chars: int = 50_000  # an inline prompt up to this size is typed; larger goes as files
    lease_timeout_s: float = 30  # wait for another review to release the browser
    attach_timeout_s: float = 60  # connecting to a running Chrome may wait for its approval prompt
    heartbeat_s: float = 5.0  # how often on_progress is called while waiting (plus on every change)

    def deadlines(self) -> tuple[float, float]:
        """(thinking, reply) deadlines for the configured model: long-thinking models get more."""
        thinking, reply = self.thinking_timeout_s, self.reply_timeout_s
        hint = (self.model_hint or "").casefold()
        for word, seconds in self.model_timeouts.items():
            if hint and re.search(rf"(?<![a-z]){re.escape(word.casefold())}(?![a-z])", hint):
                thinking, reply = max(thinking, seconds), max(reply, seconds)
        return thinking, max(reply, thinking)


@dataclass(frozen=True)
class Fallback:
    """A named selector whose primary candidate matched nothing while a later candidate did."""

    name: str
    primary: str
    used: str

    def render(self) -> str:
        return f"{self.name}: primary {self.primary} matched nothing; fallback {self.used} in use"


@dataclass(frozen=True)
class Progress:
    """Liveness of a reply being waited for: what the page shows, never what the model reasons."""

    stage: str  # sending | thinking | writing | finishing
    status: str | None  # a canonical status label from the profile ("thinking", "searching the web"), if shown
    elapsed_s: float  # since the wait began
    text_len: int  # characters of reply text rendered so far
    quiet_s: float  # since the reply text last changed
    conversation_url: str  # durable URL, "" until known


@dataclass
class BridgeReply:
    markdown: str
    conversation_url: str
    sent_at: float  # wall-clock seconds (time.time())
    finished_at: float  # when the reply text was last seen changing
    detected_at: float  # when completion was proven
    read_via: str = "dom"  # "copy" (ChatGPT's own copy button, clipboard intercepted in-page) or "dom"
    proof: str = ""  # what proved completion: "end marker" | "quiet"
    delivery: str = "inline"  # how the prompt went: "inline" | "files"
    model: str | None = None  # the model label the page confirmed, if one was picked
    model_verified: bool | None = None  # None: no model asked for
    fallbacks: list[Fallback] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
