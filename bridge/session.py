"""One bridge operation's hold on the browser: lease, CDP connection and one fresh page.

Invariants:
- the user's browser and their own tabs are never closed: the session opens one page in the
  browser's default context (the logged-in session) and closes only that page; stopping
  Playwright merely drops the CDP connection;
- the lease is taken before any page is opened, so a refused review touches nothing;
- Playwright is imported here lazily (inside functions), keeping ``import planegate.bridge``
  cheap; its errors are translated to the bridge's own at this boundary.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .browser import BrowserLease, EndpointInfo, find_endpoint
from .errors import DOCTOR_HINT, BridgeError, DeadlineExceeded

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def playwright_errors(step: str, timeout_s: float, url: str = "") -> Iterator[None]:
    """Translate Playwright's errors raised during ``step`` into the bridge's."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        yield
    except PlaywrightTimeout as exc:
        raise DeadlineExceeded(step, timeout_s, url) from exc
    except PlaywrightError as exc:
        raise BridgeError(f"{step} failed in the browser: {_first_line(exc)}; {DOCTOR_HINT}") from exc


def evaluate_bounded(page: Page, script: str, arg: Any, timeout_s: float) -> Any:
    """``page.evaluate`` with a deadline (plain evaluate has none: a hung tab would block forever).

    Raises Playwright's ``TimeoutError`` after ``timeout_s``; the caller translates it.
    """
    # wait_for_function returns on the first truthy result, so the value is boxed to be truthy;
    # interval polling, because requestAnimationFrame stops in a background tab.
    handle = page.wait_for_function(
        f"(args) => ({{value: ({script})(args)}})", arg=arg, timeout=timeout_s * 1000, polling=100
    )
    try:
        return handle.json_value()["value"]
    finally:
        handle.dispose()


def evaluate_async_bounded(page: Page, script: str, arg: Any, timeout_s: float) -> Any:
    """Run an ``async (args) => ...`` script to its end, within ``timeout_s``.

    The promise is started once and its result polled for, so a hung promise (or tab) costs the
    deadline, never a blocked thread. Raises Playwright's ``TimeoutError`` like
    ``evaluate_bounded``.
    """
    key = f"__planegate_job_{secrets.token_hex(6)}"
    starter = (
        f"(args) => {{ const jobs = window.__planegateJobs || (window.__planegateJobs = {{}});"
        f" if (!jobs[{key!r}]) {{ const job = jobs[{key!r}] = {{done: false}};"
        f" Promise.resolve().then(() => ({script})(args)).then("
        f"(v) => {{ job.done = true; job.value = v; }}, (e) => {{ job.done = true; job.error = String(e); }}); }}"
        f" const job = jobs[{key!r}]; if (!job.done) return false; delete jobs[{key!r}];"
        f" return {{value: job.value === undefined ? null : job.value, error: job.error || null}}; }}"
    )
    handle = page.wait_for_function(starter, arg=arg, timeout=timeout_s * 1000, polling=50)
    try:
        result = handle.json_value()
    finally:
        handle.dispose()
    if result.get("error"):
        from playwright.sync_api import Error as PlaywrightError

        raise PlaywrightError(f"in-page script failed: {result['error']}")
    return result["value"]


class PageSession:
    """``with PageSession(...) as s: s.page ...`` — see the module docstring for what it guarantees."""

    def __init__(
        self,
        endpoints: Sequence[str],
        lease_dir: Path | None,
        *,
        lease_timeout_s: float,
        connect_timeout_s: float,
        attach_timeout_s: float | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.lease_dir = lease_dir
        self.lease_timeout_s = lease_timeout_s
        self.connect_timeout_s = connect_timeout_s
        # A websocket-only endpoint (Chrome's remote-debugging toggle) waits for the user to allow it.
        self.attach_timeout_s = max(attach_timeout_s or connect_timeout_s, connect_timeout_s)
        self.endpoint: EndpointInfo | None = None
        self.browser_version: str = ""
        self._lease: BrowserLease | None = None
        self._pw: Playwright | None = None
        self._browser: Browser | None = None
        self._page: Page | None = None

    @property
    def has_page(self) -> bool:
        return self._page is not None and not self._page.is_closed()

    @property
    def page(self) -> Page:
        if self._page is None:
            raise BridgeError("the browser session is not open; use PageSession as a context manager")
        return self._page

    def __enter__(self) -> PageSession:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _open(self) -> None:
        from playwright.sync_api import sync_playwright

        self.endpoint = find_endpoint(self.endpoints)
        if self.lease_dir is not None:
            # Keyed by the browser's websocket URL: unique per running browser, whatever alias reached it.
            self._lease = BrowserLease(self.lease_dir, self.endpoint.websocket_url or self.endpoint.cdp_url)
            self._lease.acquire(self.lease_timeout_s)
        timeout = self.attach_timeout_s if self.endpoint.websocket_only else self.connect_timeout_s
        with playwright_errors(f"connecting to {self.endpoint.cdp_url}", timeout):
            self._pw = sync_playwright().start()
            self._browser = self._pw.chromium.connect_over_cdp(self.endpoint.cdp_url, timeout=timeout * 1000)
            self.browser_version = self._browser.version
            contexts = self._browser.contexts
            if not contexts:
                raise BridgeError(
                    f"the browser at {self.endpoint.cdp_url} exposes no browser context; open a window in it "
                    "(or restart it with `planegate browser launch`), then retry"
                )
            self._page = contexts[0].new_page()

    def close(self) -> None:
        """Close our page, drop the connection, release the lease; never raises for cleanup noise."""
        from playwright.sync_api import Error as PlaywrightError

        page, self._page = self._page, None
        if page is not None:
            with contextlib.suppress(PlaywrightError):
                page.close(run_before_unload=False)
        pw, self._pw = self._pw, None
        self._browser = None
        if pw is not None:
            with contextlib.suppress(PlaywrightError):
                pw.stop()
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()
