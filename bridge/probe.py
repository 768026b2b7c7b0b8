"""One poll of the ChatGPT page (``pagejs.PROBE_JS``) as a typed value, and conversation URLs.

Shared by the driver and ``doctor``, so both judge a page the same way.

A conversation URL is *durable* only when its path holds ``/c/<id>`` with an id of letters,
digits and dashes, followed by the end, ``/``, ``?`` or ``#``. ChatGPT first shows a transient
``/c/WEB:<request id>`` that cannot be reopened; that one is never recorded.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import BridgeError, DeadlineExceeded
from .pagejs import PROBE_JS
from .selectors import Match, Profile
from .session import evaluate_bounded

if TYPE_CHECKING:
    from playwright.sync_api import Page

_DURABLE = re.compile(r"/c/([A-Za-z0-9-]+)(?=[/?#]|$)")


def conversation_id(url: str) -> str | None:
    """The durable conversation id in ``url``, or ``None`` (no conversation, or a transient one)."""
    found = _DURABLE.search(urlsplit(url).path)
    return found.group(1) if found else None


def is_durable_conversation_url(url: str) -> bool:
    return conversation_id(url) is not None


def is_conversation_url(url: str) -> bool:
    """Any ``/c/`` path, durable or transient: the page is showing a conversation."""
    return "/c/" in urlsplit(url).path


@dataclass(frozen=True)
class PageState:
    url: str
    title: str
    composer: bool
    composer_chars: int  # non-whitespace characters in the composer
    logged_out: bool  # a login control is visible
    logged_in: bool  # the account's profile control (or chat history) is present
    shell: bool  # the app shell is rendered (never a challenge then)
    cf_strong: bool  # a challenge interstitial's own signs
    cf_weak: bool  # only the challenge-platform script on a short, shell-less page
    cf_evidence: str
    dialog: dict[str, Any] | None  # {"welcome": bool, "accounts": int, "text": str}
    turns: int  # assistant turns
    user_turns: int
    last_user: str  # the newest user turn's text without whitespace (first 400 chars)
    pending_user: bool
    has_body: bool
    text_len: int
    text_hash: int
    quiet_s: float | None  # in-page time since the reply body last changed, when known
    marker_at_end: bool  # the asked-for end marker sits at the end of the reply
    stop_match: Match | None  # the stop candidate that shows, if any (read in the same poll)
    busy: bool  # shimmer, aria-busy or a running progress bar in the newest turn
    status: str | None  # a present-tense status label from the profile, if shown
    actions: bool
    retry: bool
    error: str | None
    usage_cap: str | None

    @property
    def active(self) -> bool:
        """Anything showing live work: then nothing is finished, whatever else the page shows."""
        return self.stop or self.busy or self.status is not None

    @property
    def stop(self) -> bool:
        """A stop control shows."""
        return self.stop_match is not None

    @classmethod
    def from_js(cls, raw: dict[str, Any]) -> PageState:
        return cls(
            url=raw["url"],
            title=raw["title"],
            composer=raw["composer"],
            composer_chars=raw["composerChars"],
            logged_out=raw["loggedOut"],
            logged_in=raw["loggedIn"],
            shell=raw["shell"],
            cf_strong=raw["cfStrong"],
            cf_weak=raw["cfWeak"],
            cf_evidence=raw["cfEvidence"],
            dialog=raw["dialog"],
            turns=raw["turns"],
            user_turns=raw["userTurns"],
            last_user=raw["lastUser"],
            pending_user=raw["pendingUser"],
            has_body=raw["hasBody"],
            text_len=raw["textLen"],
            text_hash=raw["textHash"],
            quiet_s=None if raw["quietMs"] is None else raw["quietMs"] / 1000,
            marker_at_end=raw["markerAtEnd"],
            stop_match=None if raw["stop"] is None else Match(**raw["stop"]),
            busy=raw["busy"],
            status=raw["status"],
            actions=raw["actions"],
            retry=raw["retry"],
            error=raw["error"],
            usage_cap=raw["usageCap"],
        )


def probe(page: Page, profile: Profile, timeout: float, end_marker: str | None = None) -> PageState:
    """One poll. A navigation between polls (which destroys the script's context) is retried;
    a tab that stops answering raises ``DeadlineExceeded``, a closed one ``BridgeError``."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    args = {**profile.js_args(), "endMarker": end_marker or ""}
    for attempt in range(3):
        try:
            return PageState.from_js(evaluate_bounded(page, PROBE_JS, args, timeout))
        except PlaywrightTimeout as exc:
            raise DeadlineExceeded("reading the page (the tab stopped responding)", timeout, page.url) from exc
        except PlaywrightError as exc:
            if page.is_closed() or attempt == 2:
                raise BridgeError(
                    f"lost the ChatGPT page ({str(exc).splitlines()[0]}); was the tab closed? retry"
                ) from exc
            time.sleep(0.1)
    raise AssertionError("unreachable")
