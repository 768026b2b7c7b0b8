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


class PageSession:
    """``with PageSession(...) as s: s.page ...`` — see the module docstring for what it guarantees."""

    def __init__(
        self,
        endpoints: Sequence[str],
        lease_dir: Path | None,
        *,
        lease_timeout_s: float,
        connect_timeout_s: float,
    ) -> None:
        self.endpoints = list(endpoints)
        self.lease_dir = lease_dir
        self.lease_timeout_s = lease_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.endpoint: EndpointInfo | None = None
        self._lease: BrowserLease | None = None
        self._pw: Playwright | None = None
        self._browser: Browser | None = None
        self._page: Page | None = None

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
        with playwright_errors(f"connecting to {self.endpoint.cdp_url}", self.connect_timeout_s):
            self._pw = sync_playwright().start()
            self._browser = self._pw.chromium.connect_over_cdp(
                self.endpoint.cdp_url, timeout=self.connect_timeout_s * 1000
            )
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
