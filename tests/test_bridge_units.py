"""Bridge parts that need no browser: endpoints, the lease, the selector profile, errors, import cost."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from planegate.bridge import (
    BrowserBusy,
    BrowserLease,
    BrowserNotFound,
    EndpointUnreachable,
    ProfileError,
    candidate_endpoints,
    find_browser_executable,
    find_endpoint,
    load_profile,
    probe_endpoint,
)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_candidate_endpoints_prefer_the_environment_then_the_config_then_the_defaults() -> None:
    assert candidate_endpoints(" 9333, localhost:9444 ,9333,", ["http://127.0.0.1:1"]) == [
        "http://127.0.0.1:9333",
        "http://localhost:9444",
    ]
    assert candidate_endpoints("", ["http://127.0.0.1:9555/"]) == ["http://127.0.0.1:9555"]
    assert candidate_endpoints(None, None) == ["http://127.0.0.1:9222", "http://127.0.0.1:9223"]


def test_endpoint_unreachable_lists_every_candidate_and_why() -> None:
    first, second = f"http://127.0.0.1:{closed_port()}", f"http://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    with pytest.raises(EndpointUnreachable) as err:
        find_endpoint([first, second], timeout=1.0)
    assert time.monotonic() - start < 3
    assert err.value.attempts == [(first, "connection refused"), (second, "connection refused")]
    assert first in str(err.value) and second in str(err.value)
    assert "planegate browser launch" in str(err.value)
    assert probe_endpoint(first, timeout=0.5) is None


def test_find_browser_executable_names_what_it_tried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("PLANEGATE_BROWSER", raising=False)
    if os.access("/usr/bin/chromium", os.X_OK):
        assert find_browser_executable(None) == "/usr/bin/chromium"
        return
    with pytest.raises(BrowserNotFound, match="google-chrome"):
        find_browser_executable(str(tmp_path / "no-such-browser"))


def test_find_browser_executable_takes_the_configured_path_first(tmp_path: Path) -> None:
    exe = tmp_path / "my-chrome"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert find_browser_executable(str(exe)) == str(exe)


def test_lease_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    first = BrowserLease(tmp_path, "ws://127.0.0.1:9222/devtools/browser/x").acquire(timeout=1)
    try:
        start = time.monotonic()
        with pytest.raises(BrowserBusy) as busy:
            BrowserLease(tmp_path, "ws://127.0.0.1:9222/devtools/browser/x").acquire(timeout=0.2)
        assert 0.2 <= time.monotonic() - start < 2
        assert f"pid {os.getpid()}" in str(busy.value)
        with BrowserLease(tmp_path, "ws://127.0.0.1:9223/devtools/browser/y"):
            pass  # another browser is another lease
    finally:
        first.release()
    with BrowserLease(tmp_path, "ws://127.0.0.1:9222/devtools/browser/x") as again:
        assert again.held


def test_lease_is_freed_when_its_holder_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from planegate.bridge import BrowserLease;"
            "BrowserLease(Path(sys.argv[1]), 'e').acquire(5); print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(BrowserBusy, match=f"pid {holder.pid}"):
            BrowserLease(tmp_path, "e").acquire(timeout=0.1)
    finally:
        holder.kill()
        holder.wait(10)
    BrowserLease(tmp_path, "e").acquire(timeout=2).release()


def test_profile_override_replaces_named_candidates_and_keeps_the_higher_version(tmp_path: Path) -> None:
    packaged = load_profile()
    override = tmp_path / "selectors.json"
    override.write_text(json.dumps({"version": 0, "selectors": {"send": ["button.new-send"], "composer": "#box"}}))

    merged = load_profile(override)

    assert merged.candidates("send") == ("button.new-send",)
    assert merged.candidates("composer") == ("#box",)
    assert merged.candidates("stop") == packaged.candidates("stop")
    assert merged.version == packaged.version
    assert merged.overridden == ("composer", "send")
    assert load_profile(tmp_path / "absent.json") == packaged


def test_profile_override_errors_name_the_file_and_key(tmp_path: Path) -> None:
    override = tmp_path / "selectors.json"
    override.write_text(json.dumps({"selectors": {"send": []}}))
    with pytest.raises(ProfileError, match=r"selectors\.send must be a non-empty list"):
        load_profile(override)
    override.write_text("{not json")
    with pytest.raises(ProfileError, match=r"selectors\.json is not valid JSON"):
        load_profile(override)
    with pytest.raises(ProfileError, match="no entry 'sned'"):
        load_profile().candidates("sned")


def test_packaged_profile_names_every_selector_the_bridge_uses() -> None:
    profile = load_profile()
    for name in [
        "composer",
        "send",
        "stop",
        "assistant_turn",
        "user_turn",
        "turn_container",
        "reply_body",
        "finished_actions",
        "attach_button",
        "file_input",
        "model_switcher",
        "model_item",
        "project_link",
        "new_chat",
        "logged_out",
        "cloudflare",
        "retry",
        "error_banner",
    ]:
        assert profile.candidates(name)
    assert profile.texts["cloudflare_title"] and profile.texts["usage_cap"]
    assert profile.base_url == "https://chatgpt.com/"


def test_importing_the_bridge_does_not_load_playwright() -> None:
    code = "import sys, planegate.bridge; print(any(m.startswith('playwright') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"
