"""The bridge's hold on the browser: CDP attach and discovery, the lease, launching, and doctor."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from planegate.bridge import (
    BridgeError,
    BridgeReply,
    BrowserBusy,
    ChatGPTBridge,
    LaunchedBrowser,
    launch_browser,
    probe_endpoint,
)
from tests.fakechat import FakeChat
from tests.fakechat.fixtures import CHROMIUM, require_chromium

pytest_plugins = ["tests.fakechat.fixtures"]
pytestmark = pytest.mark.browser

MakeBridge = Callable[..., ChatGPTBridge]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def open_tabs(endpoint: str) -> list[str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{endpoint}/json/list", timeout=5) as resp:
        return [t["url"] for t in json.load(resp) if t["type"] == "page"]


def test_ask_attaches_over_cdp_and_leaves_the_users_browser_and_tabs_open(
    make_bridge: MakeBridge, chromium: LaunchedBrowser, fakechat: FakeChat
) -> None:
    before = open_tabs(chromium.endpoint.url)

    make_bridge().ask("hi", [], on_sent=lambda url: None)

    assert probe_endpoint(chromium.endpoint.url) is not None
    assert open_tabs(chromium.endpoint.url) == before


def test_endpoint_discovery_skips_an_unreachable_candidate(
    make_bridge: MakeBridge, chromium: LaunchedBrowser, fakechat: FakeChat
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    reply = make_bridge(endpoints=[dead, chromium.endpoint.url]).ask("hi", [], on_sent=lambda url: None)
    assert reply.markdown
    assert len(fakechat.prompts) == 1


def _ask_in_thread(bridge: ChatGPTBridge, prompt: str) -> tuple[threading.Thread, list[BridgeReply | BaseException]]:
    result: list[BridgeReply | BaseException] = []

    def run() -> None:
        try:
            result.append(bridge.ask(prompt, [], on_sent=lambda url: None))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run, name=f"ask-{prompt}")
    thread.start()
    return thread, result


def test_a_second_ask_on_a_busy_browser_is_refused_naming_the_holder(
    make_bridge: MakeBridge, fakechat: FakeChat
) -> None:
    fakechat.thinking_s = 1.5
    thread, first = _ask_in_thread(make_bridge(), "first")
    try:
        assert fakechat.prompt_received.wait(15), "the first review never sent its prompt"
        start = time.monotonic()
        with pytest.raises(BrowserBusy) as busy:
            make_bridge(lease_timeout_s=0.3).ask("second", [], on_sent=lambda url: None)
        assert time.monotonic() - start < 3
        assert f"pid {os.getpid()}" in str(busy.value)
    finally:
        thread.join(30)
    assert not thread.is_alive()
    assert isinstance(first[0], BridgeReply)
    assert [p.text for p in fakechat.prompts] == ["first"]


def test_a_second_ask_waits_its_turn_when_the_lease_timeout_allows(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.thinking_s = 0.8
    thread, first = _ask_in_thread(make_bridge(), "first")
    try:
        assert fakechat.prompt_received.wait(15), "the first review never sent its prompt"
        second = make_bridge(lease_timeout_s=30).ask("second", [], on_sent=lambda url: None)
    finally:
        thread.join(30)
    (done,) = first
    assert isinstance(done, BridgeReply)
    assert second.sent_at > done.detected_at
    assert second.conversation_url != done.conversation_url
    assert [p.text for p in fakechat.prompts] == ["first", "second"]


def test_doctor_reports_a_ready_page_without_sending(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    report = make_bridge().doctor()

    assert report.ok, report.render()
    assert report.logged_in is True
    checks = {c.name: c for c in report.selectors}
    assert checks["composer"].match is not None and checks["composer"].match.candidate == "#prompt-textarea"
    assert checks["send"].match is not None
    assert "overall" in report.render().splitlines()[-1]
    assert fakechat.prompts == []


def test_doctor_flags_the_missing_send_button_on_drift(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.variant = "drift"
    report = make_bridge().doctor()

    assert not report.ok
    assert report.missing == ["send"]
    assert any(line.startswith("FAIL") and "selector send" in line for line in report.render().splitlines())
    assert fakechat.prompts == []


def test_doctor_reports_a_logged_out_session(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.variant = "logged_out"
    report = make_bridge().doctor()

    assert not report.ok
    assert report.logged_in is False
    assert "composer" in report.missing
    assert {c.name: c.ok for c in report.selectors}["logged_out"] is False


def test_doctor_reports_unreachable_endpoints_without_raising(make_bridge: MakeBridge) -> None:
    report = make_bridge(endpoints=[f"http://127.0.0.1:{free_port()}"]).doctor()

    assert not report.ok
    assert report.endpoint is None
    assert "connection refused" in report.render()


def test_launch_browser_serves_devtools_on_the_given_port_and_refuses_a_taken_one(tmp_path: Path) -> None:
    require_chromium()
    port = free_port()
    browser = launch_browser(tmp_path / "profile", executable=CHROMIUM, port=port, headless=True)
    try:
        assert browser.endpoint.url == f"http://127.0.0.1:{port}"
        assert browser.endpoint.browser.startswith("Chrome/")
        assert (tmp_path / "profile.log").exists()
        with pytest.raises(BridgeError, match=f"port {port} already serves a browser"):
            launch_browser(tmp_path / "other", executable=CHROMIUM, port=port, headless=True)
    finally:
        browser.stop()
    assert probe_endpoint(f"http://127.0.0.1:{port}", timeout=0.5) is None
