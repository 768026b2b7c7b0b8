"""Errors of the ChatGPT web bridge: one small tree, each message naming the value and the next step.

    BridgeError                 (``stage``: navigate | login | compose | send | wait | read, when known)
    ├── EndpointUnreachable     no DevTools endpoint answered; lists every candidate and why
    ├── BrowserNotFound         no Chromium/Chrome executable to launch
    ├── BrowserBusy             another review holds the lease on this browser session
    ├── ProfileError            the selector profile (packaged or user override) is malformed
    ├── LoggedOut               no proof of a logged-in account (login control, guest page)
    ├── AccountChooser          ChatGPT shows its "Welcome back" account picker
    ├── CloudflareChallenge     the page is a Cloudflare interstitial ("Just a moment…")
    ├── SelectorDrift           named selectors match nothing on the page; carries the report
    │   └── OptionNotFound      a configured project or model is not among the choices offered
    ├── ModelNotVerified        the model was picked but the page does not confirm it (policy requires it)
    ├── PromptTruncated         the composer holds less than was written (a silent cut)
    ├── SendNotCommitted        send was clicked (and Enter pressed) but no new turn started
    ├── UsageCapReached         a usage-cap / rate-limit banner is shown
    ├── ReplyFailed             the reply ended in an error banner or a retry control
    ├── DeadlineExceeded        a phase ran past its deadline and nothing can be re-read later
    └── ReplyPending            NOT a failure: the prompt was sent, the conversation URL is durable,
                                the reply is still coming; re-read it later with ``read_reply``

The bridge raises only these; Playwright's own errors are translated where they happen
(``raise X(...) from exc``). Every error raised while a page was open carries the stage it
happened in and, when the caller gave a diagnostics directory, the screenshot and DOM summary
saved there (``diagnostics``); ``str(error)`` names both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

DOCTOR_HINT = "run `planegate browser doctor` to see which checks fail"
STAGES = ("navigate", "login", "compose", "send", "wait", "read")
ATTACH_HINT = (
    "start the dedicated browser with `planegate browser launch` (recommended), or attach to your running "
    "Chrome: enable remote debugging at chrome://inspect/#remote-debugging and set PLANEGATE_CDP_URL (or "
    "[review] cdp_urls) to its profile folder, e.g. ~/.config/google-chrome, so planegate reads its "
    "DevToolsActivePort (Chrome 136+ ignores --remote-debugging-port on the everyday profile)"
)


class BridgeError(Exception):
    """Base of every error the bridge raises."""

    stage: str = ""
    diagnostics: tuple[Path, ...] = ()

    def __str__(self) -> str:
        text = super().__str__()
        if self.stage:
            text = f"[stage {self.stage}] {text}"
        if self.diagnostics:
            text += f" (screenshot and DOM summary saved: {', '.join(p.name for p in self.diagnostics)})"
        return text


class EndpointUnreachable(BridgeError):
    def __init__(self, attempts: Sequence[tuple[str, str]]) -> None:
        self.attempts = list(attempts)
        tried = "; ".join(f"{url}: {why}" for url, why in self.attempts) or "no candidates were given"
        super().__init__(f"no browser DevTools endpoint answered ({tried}); {ATTACH_HINT}")


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
    stage = "login"

    def __init__(self, url: str, why: str = "it shows a login control") -> None:
        self.url = url
        self.why = why
        super().__init__(
            f"ChatGPT at {url} is not logged in ({why}); log in once in the browser started by "
            "`planegate browser launch` (or the Chrome you attach to), then retry"
        )


class AccountChooser(BridgeError):
    stage = "login"

    def __init__(self, url: str, accounts: int, wanted: str | None) -> None:
        self.url = url
        self.accounts = accounts
        self.wanted = wanted
        if wanted:
            what = f"none of its {accounts} saved account(s) is {wanted!r}; fix account_email or"
        else:
            what = f"it lists {accounts} saved account(s) and no account_email is configured to choose one;"
        super().__init__(
            f"ChatGPT at {url} shows its 'Welcome back' account picker: {what} pick your account once in that "
            "browser window, then retry"
        )


class CloudflareChallenge(BridgeError):
    stage = "navigate"

    def __init__(self, url: str, evidence: str = "") -> None:
        self.url = url
        self.evidence = evidence
        seen = f" ({evidence})" if evidence else ""
        super().__init__(
            f"{url} shows a Cloudflare challenge{seen}; open that browser window, pass the check by hand "
            "(a headful browser passes more often than a headless one), then retry"
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


class ModelNotVerified(BridgeError):
    stage = "compose"

    def __init__(self, wanted: str, shown: str) -> None:
        self.wanted = wanted
        self.shown = shown
        super().__init__(
            f"picked the model {wanted!r} but the page does not confirm it (the model control shows {shown!r}); "
            "nothing was sent. Check the model name in the browser, fix model_hint, or drop the requirement"
        )


class PromptTruncated(BridgeError):
    stage = "compose"

    def __init__(self, written: int, expected: int) -> None:
        self.written = written
        self.expected = expected
        super().__init__(
            f"the composer holds {written} of the {expected} characters written (ChatGPT cut the prompt "
            "silently); nothing was sent. Send the packet as files instead (a shorter inline prompt)"
        )


class SendNotCommitted(BridgeError):
    stage = "send"

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        self.detail = detail
        super().__init__(
            f"send did not commit at {url}: {detail}. Nothing was sent; retry, and if it repeats {DOCTOR_HINT}"
        )


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


class ReplyPending(BridgeError):
    """The prompt is in the conversation and the reply is still coming: re-read it later.

    ``conversation_url`` is durable (``/c/<id>``), so ``read_reply`` can reopen it; ``status`` is the
    last liveness label seen ("thinking", "writing" ...), never reasoning text.
    """

    stage = "wait"

    def __init__(self, conversation_url: str, waited_s: float, status: str, phase: str) -> None:
        self.conversation_url = conversation_url
        self.waited_s = waited_s
        self.status = status
        self.phase = phase
        super().__init__(
            f"the reply at {conversation_url} is still {status} after {waited_s:.0f} s ({phase}); it was sent, "
            "so re-read it later with read_reply instead of sending again"
        )
