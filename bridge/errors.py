"""Errors of the ChatGPT web bridge: one small tree, each message naming the value and the next step.

    BridgeError
    ├── EndpointUnreachable   no DevTools endpoint answered; lists every candidate and why
    ├── BrowserNotFound       no Chromium/Chrome executable to launch
    ├── BrowserBusy           another review holds the lease on this browser session
    ├── ProfileError          the selector profile (packaged or user override) is malformed
    ├── LoggedOut             the ChatGPT page shows a login control
    ├── CloudflareChallenge   the page is a Cloudflare "Just a moment" challenge
    ├── SelectorDrift         named selectors match nothing on the page; carries the report
    │   └── OptionNotFound    a configured project or model is not among the choices offered
    ├── UsageCapReached       a usage-cap / rate-limit banner is shown
    ├── ReplyFailed           the reply ended in an error banner or a retry control
    └── DeadlineExceeded      a phase (page load, thinking, reply, ...) ran past its deadline

The bridge raises only these; Playwright's own errors are translated where they happen
(``raise X(...) from exc``). Callers above the bridge map them to their own error tree.
"""

from __future__ import annotations

from collections.abc import Sequence

DOCTOR_HINT = "run `planegate browser doctor` to see which checks fail"


class BridgeError(Exception):
    """Base of every error the bridge raises."""


class EndpointUnreachable(BridgeError):
    def __init__(self, attempts: Sequence[tuple[str, str]]) -> None:
        self.attempts = list(attempts)
        tried = "; ".join(f"{url}: {why}" for url, why in self.attempts) or "no candidates were given"
        super().__init__(
            f"no browser DevTools endpoint answered ({tried}); start one with `planegate browser launch` "
            "or start Chrome with --remote-debugging-port=9222, or set PLANEGATE_CDP_URL to its URL"
        )


class BrowserNotFound(BridgeError):
    def __init__(self, tried: Sequence[str]) -> None:
        self.tried = list(tried)
        super().__init__(
            f"no Chromium or Chrome executable found (tried {', '.join(self.tried)}); install chromium "
            "or set PLANEGATE_BROWSER / the configured executable path to the browser binary"
        )


class BrowserBusy(BridgeError):
    def __init__(self, endpoint: str, holder: str, waited_s: float) -> None:
        self.endpoint = endpoint
        self.holder = holder
        self.waited_s = waited_s
        super().__init__(
            f"the browser at {endpoint} is in use by another review ({holder}); waited {waited_s:.1f} s; "
            "retry when that review finishes, or point this one at another browser endpoint"
        )


class ProfileError(BridgeError):
    pass


class LoggedOut(BridgeError):
    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(
            f"ChatGPT at {url} shows a login control: the browser session is logged out; log in once in "
            "the browser started by `planegate browser launch`, then retry"
        )


class CloudflareChallenge(BridgeError):
    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(
            f"{url} shows a Cloudflare challenge ('Just a moment…'); open that browser window, pass the "
            "check by hand, then retry"
        )


class SelectorDrift(BridgeError):
    """Named selectors from the profile match nothing: the page changed under the bridge."""

    def __init__(self, missing: Sequence[str], report: str, *, step: str = "") -> None:
        self.missing = list(missing)
        self.report = report
        self.step = step
        where = f" while {step}" if step else ""
        super().__init__(
            f"ChatGPT's page no longer matches the selector profile{where}: missing {', '.join(self.missing)}. "
            f"{report}\nUpdate those entries in PLANEGATE_HOME/browser/selectors.json, then {DOCTOR_HINT}"
        )


class OptionNotFound(SelectorDrift):
    """A configured project or model is not offered on the page (config error or drift)."""

    def __init__(self, selector: str, kind: str, wanted: str, seen: Sequence[str]) -> None:
        self.kind = kind
        self.wanted = wanted
        self.seen = list(seen)
        listed = ", ".join(repr(s) for s in self.seen[:20]) or "none"
        report = f"no {kind} matching {wanted!r}; {kind}s seen: {listed}. Fix the configured {kind} name"
        super().__init__([selector], report, step=f"choosing the {kind}")


class UsageCapReached(BridgeError):
    def __init__(self, banner: str, url: str) -> None:
        self.banner = banner
        self.url = url
        super().__init__(
            f"ChatGPT shows a usage-limit banner at {url}: {banner!r}; wait until the limit resets "
            "(or pick another model with model_hint), then retry"
        )


class ReplyFailed(BridgeError):
    def __init__(self, reason: str, url: str) -> None:
        self.reason = reason
        self.url = url
        super().__init__(f"ChatGPT's reply failed at {url}: {reason}; retry the review (a new conversation is started)")


class DeadlineExceeded(BridgeError):
    def __init__(self, phase: str, seconds: float, url: str = "", hint: str = "") -> None:
        self.phase = phase
        self.seconds = seconds
        self.url = url
        at = f" at {url}" if url else ""
        nxt = hint or "retry, or raise the matching timeout in the bridge settings"
        super().__init__(f"{phase} took longer than {seconds:.1f} s{at}; {nxt}")
