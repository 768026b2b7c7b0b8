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
    STAGES,
    BrowserBusy,
    BrowserLease,
    BrowserNotFound,
    EndpointUnreachable,
    LoggedOut,
    ProfileError,
    ReplyPending,
    SelectorDrift,
    active_port_file,
    candidate_endpoints,
    conversation_id,
    find_browser_executable,
    find_endpoint,
    is_durable_conversation_url,
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
        "logged_in",
        "app_shell",
        "cloudflare",
        "cloudflare_script",
        "dialog",
        "turn_copy",
        "busy",
        "status_node",
        "attachment_chip",
        "attachment_remove",
        "upload_busy",
        "model_checked",
        "retry",
        "error_banner",
    ]:
        assert profile.candidates(name)
    for text in ("cloudflare_title", "cloudflare_copy", "usage_cap", "thinking_status", "welcome_back", "dismiss"):
        assert profile.texts[text], text
    assert profile.base_url == "https://chatgpt.com/"


def test_the_profile_is_version_2_and_never_counts_the_bot_management_script_as_a_challenge() -> None:
    profile = load_profile()
    assert profile.version == 2
    # Cloudflare injects this script into healthy pages: it is weak evidence, kept apart.
    assert not any('challenge-platform/"]' in c and c.startswith("script") for c in profile.candidates("cloudflare"))
    assert profile.candidates("cloudflare_script") == ('script[src*="/challenge-platform/"]',)
    # The stop fallback must not catch dictation, voice or read-aloud "stop" buttons.
    stop_fallback = profile.candidates("stop")[-1]
    assert stop_fallback.startswith("form ") and all(w in stop_fallback for w in ("dictat", "voice", "read"))
    assert "thought for" not in " ".join(profile.texts["thinking_status"])


def test_only_a_durable_conversation_url_counts() -> None:
    assert conversation_id("https://chatgpt.com/c/6a1b2c3d-aaaa-4bbb-8ccc-0123456789ab") == (
        "6a1b2c3d-aaaa-4bbb-8ccc-0123456789ab"
    )
    assert conversation_id("https://chatgpt.com/g/g-p-6a1b-planegate/c/abc-123?model=x#end") == "abc-123"
    assert conversation_id("https://chatgpt.com/c/abc-123/") == "abc-123"
    assert conversation_id("https://chatgpt.com/c/WEB:9f3e2a1b") is None
    assert conversation_id("https://chatgpt.com/c/WEB%3A9f3e2a1b") is None
    assert conversation_id("https://chatgpt.com/") is None
    assert not is_durable_conversation_url("https://chatgpt.com/g/g-p-6a1b-planegate/project")


def test_a_profile_folder_is_an_endpoint_candidate_read_through_devtools_active_port(tmp_path: Path) -> None:
    home = Path.home()
    assert candidate_endpoints("~/.config/google-chrome, 9222", None) == [
        str(home / ".config" / "google-chrome"),
        "http://127.0.0.1:9222",
    ]
    assert candidate_endpoints(None, [f"file:{tmp_path}"]) == [str(tmp_path)]
    profile = tmp_path / "chrome"
    profile.mkdir()
    with pytest.raises(EndpointUnreachable, match="no DevToolsActivePort in"):
        find_endpoint([str(profile)], timeout=0.5)
    (profile / "DevToolsActivePort").write_text("not a port\n")
    with pytest.raises(EndpointUnreachable, match="does not hold a port"):
        find_endpoint([str(profile)], timeout=0.5)
    port = closed_port()
    (profile / "DevToolsActivePort").write_text(f"{port}\n/devtools/browser/abc\n")
    with pytest.raises(EndpointUnreachable, match=f"names port {port}, but connection refused"):
        find_endpoint([str(profile)], timeout=0.5)
    assert active_port_file(profile) == profile / "DevToolsActivePort"
    assert active_port_file(profile / "DevToolsActivePort") == profile / "DevToolsActivePort"


def test_errors_name_their_stage_and_the_pending_outcome_is_not_a_failure_message() -> None:
    assert str(LoggedOut("https://chatgpt.com/")).startswith("[stage login] ")
    drift = SelectorDrift(["send"], "report", step="sending")
    drift.stage = "send"
    assert str(drift).startswith("[stage send] ")
    pending = ReplyPending("https://chatgpt.com/c/abc", 3600.0, "pro thinking", "waiting for the reply to finish")
    assert pending.stage == "wait" and "re-read it later" in str(pending) and "failed" not in str(pending)
    assert set(STAGES) == {"navigate", "login", "compose", "send", "wait", "read"}


def _bridge_imports() -> dict[str, list[tuple[str, bool]]]:
    """Each bridge module's imports of planegate modules: (target module, inside a function?)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "bridge"
    graph: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(root.glob("*.py")):
        module = path.stem
        tree = ast.parse(path.read_text())
        found: list[tuple[str, bool]] = []

        def visit(node: ast.AST, nested: bool, found: list[tuple[str, bool]] = found) -> None:
            for child in ast.iter_child_nodes(node):
                inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                if isinstance(child, ast.ImportFrom):
                    if child.level == 1 or (child.module or "").startswith("planegate."):
                        found.append((child.module or "", inner))
                elif isinstance(child, ast.Import):
                    found += [(a.name, inner) for a in child.names if a.name.startswith("planegate.")]
                visit(child, inner)

        visit(tree, False)
        graph[module] = found
    return graph


def test_the_bridge_has_no_import_cycle_and_never_imports_tools_or_server() -> None:
    graph = _bridge_imports()
    for module, imports in graph.items():
        for target, _ in imports:
            assert not target.startswith(("planegate.tools", "planegate.server")), (
                f"bridge/{module}.py imports {target}"
            )
        # A function-level import of a sibling module would only hide a cycle.
        assert [t for t, nested in imports if nested and t in graph] == [], f"bridge/{module}.py"
    edges = {m: {t for t, _ in imports if t in graph} for m, imports in graph.items()}
    visiting: list[str] = []
    done: set[str] = set()

    def walk(m: str) -> None:
        assert m not in visiting, f"import cycle: {' -> '.join([*visiting[visiting.index(m) :], m])}"
        if m in done:
            return
        visiting.append(m)
        for t in sorted(edges[m]):
            walk(t)
        visiting.pop()
        done.add(m)

    for m in sorted(edges):
        walk(m)
    assert "chatgpt" not in edges["doctor"]


def test_importing_the_bridge_does_not_load_playwright() -> None:
    code = "import sys, planegate.bridge; print(any(m.startswith('playwright') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"
