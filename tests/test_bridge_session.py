"""The bridge's hold on the browser: CDP attach and discovery, the lease, launching, and doctor."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from planegate.bridge import (
    BridgeError,
    BridgeReply,
    BrowserBusy,
    ChatGPTBridge,
    EndpointUnreachable,
    LaunchedBrowser,
    candidate_endpoints,
    find_endpoint,
    launch_browser,
    probe_endpoint,
)
from planegate.bridge.selectors import Profile
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


@pytest.mark.parametrize("dom", ["2025", "2026"])
def test_doctor_reports_a_ready_page_without_sending(make_bridge: MakeBridge, fakechat: FakeChat, dom: str) -> None:
    fakechat.dom = dom
    report = make_bridge().doctor()

    assert report.ok, report.render()
    assert (report.logged_in, report.login_proof) == (True, "the account's profile control is shown")
    assert not report.cloudflare
    checks = {c.name: c for c in report.selectors}
    assert checks["composer"].match is not None and checks["composer"].match.candidate == "#prompt-textarea"
    assert checks["send"].match is not None and not checks["send"].fallback
    assert checks["model_switcher"].match is not None  # the 2026 pill mounts late; doctor waits for it
    # The profile's primaries are the current (2026) site; on the older page a fallback carries it.
    assert [fb.name for fb in report.fallbacks] == ([] if dom == "2026" else ["model_switcher"])
    assert "overall" in report.render().splitlines()[-1]
    bot_note = any("bot-management script" in n for n in report.notes)
    assert bot_note == (dom == "2026")
    assert fakechat.prompts == []


def test_doctor_flags_the_missing_send_button_on_drift(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.variant = "drift"
    report = make_bridge().doctor()

    assert not report.ok
    assert report.missing == ["send"]
    assert any(line.startswith("FAIL") and "selector send" in line for line in report.render().splitlines())
    assert fakechat.prompts == []


def test_doctor_shows_a_fallback_in_use_now_and_one_a_review_recorded(
    make_bridge: MakeBridge, fakechat: FakeChat
) -> None:
    fakechat.variant = "send_no_testid"
    fakechat.thinking_s = 1.0  # the stop control shows for a second, not a fifth: a loaded machine still sees it
    bridge = make_bridge()
    bridge.ask("hi", [], on_sent=lambda url: None)  # records the fallbacks it relied on
    fakechat.variant = "normal"

    healthy = bridge.doctor()

    assert healthy.ok, healthy.render()
    warned = [line for line in healthy.render().splitlines() if line.startswith("WARN")]
    assert any("selector send" in line and "fallback in use (seen by a review" in line for line in warned), warned
    assert {fb.name for fb in healthy.fallbacks} >= {"send", "stop"}

    fakechat.variant = "send_no_testid"
    now = bridge.doctor()
    send = next(c for c in now.selectors if c.name == "send")
    assert send.fallback and send.match is not None and send.match.candidate.startswith("#composer-submit-button")
    line = next(x for x in now.render().splitlines() if "selector send" in x and x.startswith("WARN"))
    assert 'fallback in use: primary button[data-testid="send-button"] matched nothing' in line


def test_a_stop_fallback_is_recorded_from_the_poll_that_saw_it(
    make_bridge: MakeBridge, fakechat: FakeChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stop control lives only while the reply streams. A second read of the page may come
    # after it is gone; the fallback must be known from the same read that saw the control.
    scan = Profile.scan

    def stop_already_gone(self: Profile, page: Any, names: Any, timeout: float = 15.0) -> dict[str, Any]:
        found = scan(self, page, names, timeout)
        return {name: None if name == "stop" else hit for name, hit in found.items()}

    monkeypatch.setattr(Profile, "scan", stop_already_gone)
    fakechat.variant = "send_no_testid"
    bridge = make_bridge()
    bridge.ask("hi", [], on_sent=lambda url: None)
    monkeypatch.undo()

    stop = next(fb for fb in bridge.doctor().fallbacks if fb.name == "stop")
    assert stop.primary == '[data-testid="stop-button"]'
    assert 'aria-label*="stop"' in stop.used


@pytest.mark.parametrize(
    ("variant", "proof"),
    [
        ("logged_out", "a login control is shown"),
        ("guest", "a guest page: a composer, but the session has no account"),
        ("welcome_back", "the 'Welcome back' account picker is shown"),
    ],
)
def test_doctor_requires_positive_proof_of_login(
    make_bridge: MakeBridge, fakechat: FakeChat, variant: str, proof: str
) -> None:
    fakechat.variant = variant
    report = make_bridge().doctor()

    assert not report.ok
    assert (report.logged_in, report.login_proof) == (False, proof)
    assert not report.cloudflare
    assert report.account_chooser == (variant == "welcome_back")
    if variant == "logged_out":
        assert {c.name: c.ok for c in report.selectors}["logged_out"] is False


def test_doctor_reports_a_cloudflare_interstitial(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.variant = "cloudflare"
    report = make_bridge().doctor()

    assert not report.ok and report.cloudflare
    assert "Just a moment" in report.cloudflare_evidence
    assert report.logged_in is None


def test_doctor_reports_unreachable_endpoints_without_raising(make_bridge: MakeBridge) -> None:
    report = make_bridge(endpoints=[f"http://127.0.0.1:{free_port()}"]).doctor()

    assert not report.ok
    assert report.endpoint is None
    assert "connection refused" in report.render()


class WebsocketOnlyProxy:
    """Chrome as its remote-debugging toggle serves it: the browser websocket, but no /json/*.

    Forwards every connection to the real browser except HTTP requests for /json/…, which get
    a 404, so the only way in is the websocket path Chrome wrote to DevToolsActivePort.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = []
        self.refused: list[str] = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.sockets.append(client)
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        request_line = head.split(b"\r\n", 1)[0].decode()
        if " /json" in request_line:
            self.refused.append(request_line)
            client.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self.sockets.append(upstream)
        upstream.sendall(head)
        back = threading.Thread(target=self._pipe, args=(upstream, client), daemon=True)
        back.start()
        self.threads.append(back)
        self._pipe(client, upstream)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in its thread
        self.server.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in [self.accepter, *self.threads]:
            t.join(5)
            assert not t.is_alive(), "proxy thread left running"


def test_a_running_chrome_is_attached_through_its_devtools_active_port_file(
    make_bridge: MakeBridge, chromium: LaunchedBrowser, fakechat: FakeChat, tmp_path: Path
) -> None:
    ws_path = urlsplit(chromium.endpoint.websocket_url).path
    proxy = WebsocketOnlyProxy(int(urlsplit(chromium.endpoint.url).port or 0))
    try:
        profile = tmp_path / "google-chrome"
        profile.mkdir()
        (profile / "DevToolsActivePort").write_text(f"{proxy.port}\n{ws_path}\n")
        [candidate] = candidate_endpoints(str(profile), None)
        assert candidate == str(profile)

        reply = make_bridge(endpoints=[candidate]).ask("hi over the websocket", [], on_sent=lambda url: None)
        report = make_bridge(endpoints=[candidate]).doctor()

        assert reply.markdown and [p.text for p in fakechat.prompts] == ["hi over the websocket"]
        assert proxy.refused, "the bridge never tried the classic /json/version first"
        assert report.ok, report.render()
        assert report.endpoints[0][1].startswith(f"ok websocket-only ws://127.0.0.1:{proxy.port}{ws_path}")
        assert report.browser_version and report.browser_version[0].isdigit()
    finally:
        proxy.close()


def test_attach_advice_names_the_chrome_136_route(tmp_path: Path) -> None:
    with pytest.raises(EndpointUnreachable) as none:
        find_endpoint([str(tmp_path / "no-such-profile"), f"http://127.0.0.1:{free_port()}"], timeout=0.5)
    text = str(none.value)
    assert "no DevToolsActivePort in" in text and "chrome://inspect/#remote-debugging" in text
    assert "planegate browser launch" in text and "Chrome 136+" in text
    assert "start Chrome with --remote-debugging-port" not in text


def test_launch_browser_serves_devtools_on_the_given_port_and_refuses_a_taken_one(tmp_path: Path) -> None:
    require_chromium()
    port = free_port()
    browser = launch_browser(tmp_path / "profile", executable=CHROMIUM, port=port, headless=True, timeout=90)
    try:
        assert browser.endpoint.url == f"http://127.0.0.1:{port}"
        assert browser.endpoint.browser.startswith("Chrome/")
        assert (tmp_path / "profile.log").exists()
        with pytest.raises(BridgeError, match=f"port {port} already serves a browser"):
            launch_browser(tmp_path / "other", executable=CHROMIUM, port=port, headless=True)
    finally:
        browser.stop()
    assert probe_endpoint(f"http://127.0.0.1:{port}", timeout=0.5) is None
