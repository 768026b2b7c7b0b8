"""Pytest fixtures for real-browser bridge tests (load with ``pytest_plugins``).

One headless Chromium per test session, started exactly as ``planegate browser launch`` starts
one (its own process group, DevTools on a port) and attached to over CDP as production does;
one FakeChat server per test. Teardown stops both and checks nothing is left running.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from planegate.bridge import BridgeConfig, ChatGPTBridge, LaunchedBrowser, launch_browser

from .server import FakeChat

CHROMIUM = "/usr/bin/chromium"
# Short waits keep the suite fast; tests about timing set their own.
FAST = {
    "poll_interval_s": 0.05,
    "stable_for_s": 0.3,
    "unmarked_quiet_s": 3.0,
    "action_timeout_s": 5.0,
    "drift_grace_s": 1.0,
    "model_picker_grace_s": 4.0,
    "cloudflare_grace_s": 4.0,
    "login_grace_s": 2.0,
    "hydration_settle_s": 0.3,
    "send_confirm_s": 3.0,
}


def require_chromium() -> None:
    """Skip without Chromium; under CI (env ``CI`` set) fail instead, so a broken runner is noticed."""
    if Path(CHROMIUM).exists():
        return
    reason = f"{CHROMIUM} is not installed; the bridge tests drive a real Chromium (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedBrowser]:
    require_chromium()
    root = tmp_path_factory.mktemp("chromium")
    browser = launch_browser(
        root / "profile",
        executable=CHROMIUM,
        port=0,
        headless=True,
        # several test processes start their browsers at once on a 2-core machine: a first start
        # can take far longer than the 15 s a user's launch is given
        timeout=90,
        extra_args=[f"--disk-cache-dir={root / 'cache'}"],
        env={**os.environ, "HOME": str(root), "XDG_CONFIG_HOME": str(root / "config"), "XDG_CACHE_HOME": str(root)},
    )
    try:
        yield browser
    finally:
        browser.stop()
        assert browser.process is None or browser.process.poll() is not None, "Chromium survived its fixture"


@pytest.fixture
def fakechat() -> Iterator[FakeChat]:
    fake = FakeChat().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def make_bridge(chromium: LaunchedBrowser, fakechat: FakeChat, tmp_path: Path) -> Callable[..., ChatGPTBridge]:
    """``make_bridge(**config_overrides)``: a bridge on the session browser and this test's fake."""

    def make(**overrides: Any) -> ChatGPTBridge:
        settings: dict[str, Any] = {"endpoints": [chromium.endpoint.url], "base_url": fakechat.url, **FAST}
        settings.update(overrides)
        return ChatGPTBridge(BridgeConfig(**settings), tmp_path / "leases")

    return make
