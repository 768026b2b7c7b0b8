"""The ChatGPT bridge against a local imitation of ChatGPT (its 2025 and 2026 DOM), driven by real
headless Chromium over CDP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from planegate.bridge import (
    AccountChooser,
    BridgeReply,
    ChatGPTBridge,
    CloudflareChallenge,
    DeadlineExceeded,
    LaunchedBrowser,
    LoggedOut,
    ModelNotVerified,
    OptionNotFound,
    Progress,
    PromptTruncated,
    ReplyFailed,
    ReplyPending,
    SelectorDrift,
    SendNotCommitted,
    UsageCapReached,
)
from tests.fakechat import FakeChat
from tests.fakechat.server import REASONING

pytest_plugins = ["tests.fakechat.fixtures"]
pytestmark = pytest.mark.browser

MakeBridge = Callable[..., ChatGPTBridge]
DOMS = pytest.mark.parametrize("dom", ["2025", "2026"])
END = "END_PLANEGATE_REVIEW"

REVIEW_JSON = json.dumps(
    {
        "review_id": "NONCE-7f3a",
        "verdict": "request_changes",
        "summary": 'Escapes survive: "quotes", back\\slash, <tags> & ampersands, tabs\tand → unicode é',
        "findings": [{"severity": "high", "file": "src/app.py", "line": 3, "title": "rate limit ignored"}],
        "missing_tests": [],
    },
    indent=2,
    ensure_ascii=False,
)
REPLY = f"""# Review of task api

The change is **mostly** fine, but *one* thing is off in `VALUE` — see [the docs](https://example.com/docs?a=1&b=2).

It mentions a rate limit and a usage limit, which are content, not banners.

## Findings

- the handler ignores the **rate limit**
- tests:
  - missing a retry case
  - missing a timeout case

1. fix the handler
2. add the tests

> quoted advice

| file | verdict |
| --- | --- |
| src/app.py | change |

```python
def handler():
    return "```not a fence```"

    # after a blank line
```

```json
{REVIEW_JSON}
```
"""


def ignore(url: str) -> None:
    return None


def marked(text: str) -> str:
    return f'{text}\n\nBEGIN_PLANEGATE_REVIEW\n```json\n{{"review_id": "N"}}\n```\n{END}\n'


@DOMS
def test_ask_reads_the_reply_through_the_copy_button_byte_exact(
    make_bridge: MakeBridge, fakechat: FakeChat, dom: str
) -> None:
    fakechat.dom = dom
    fakechat.responder = lambda prompt, files, turn: REPLY
    bridge = make_bridge(poll_interval_s=0.25)
    sent: list[tuple[str, float]] = []
    prompt = "Review this.\n\n  indented line\nreview_id: NONCE-7f3a"

    reply = bridge.ask(prompt, [], on_sent=lambda url: sent.append((url, time.time())))

    assert reply.markdown == REPLY
    assert reply.read_via == "copy"
    assert [url for url, _ in sent] == [reply.conversation_url]
    assert "/c/" in reply.conversation_url and "WEB:" not in reply.conversation_url
    assert sent[0][1] <= reply.finished_at <= reply.detected_at
    assert [p.text for p in fakechat.prompts] == [prompt]
    assert (reply.proof, reply.delivery, reply.model_verified) == ("quiet", "inline", None)


@DOMS
def test_without_a_working_copy_button_the_page_is_read_codemirror_blocks_included(
    make_bridge: MakeBridge, fakechat: FakeChat, dom: str
) -> None:
    fakechat.dom = dom
    fakechat.copy_works = False
    fakechat.responder = lambda prompt, files, turn: REPLY

    reply = make_bridge().ask("hi", [], on_sent=ignore)

    assert reply.read_via == "dom"
    assert f"```json\n{REVIEW_JSON}\n```" in reply.markdown
    assert reply.markdown == REPLY
    assert any("copy button gave nothing" in n for n in reply.notes)


def test_reading_through_the_copy_button_leaves_the_users_clipboard_alone(
    make_bridge: MakeBridge, fakechat: FakeChat, chromium: LaunchedBrowser
) -> None:
    from playwright.sync_api import sync_playwright

    fakechat.responder = lambda prompt, files, turn: REPLY
    endpoint = chromium.endpoint.url
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(endpoint)
        context = browser.contexts[0]
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=fakechat.url.rstrip("/"))
        page = context.new_page()
        try:
            page.goto(fakechat.url + "?variant=logged_out")
            page.evaluate("() => navigator.clipboard.writeText('the user copied this')")

            # One thread drives one sync Playwright: the bridge gets its own, as in a worker.
            replies: list[BridgeReply] = []
            worker = threading.Thread(target=lambda: replies.append(make_bridge().ask("hi", [], on_sent=ignore)))
            worker.start()
            worker.join(60)
            (reply,) = replies
            assert reply.read_via == "copy" and reply.markdown == REPLY
            page.bring_to_front()
            assert page.evaluate("() => navigator.clipboard.readText()") == "the user copied this"
        finally:
            page.close()
            context.clear_permissions()


@pytest.mark.parametrize(
    ("dom", "lazy_input"),
    [("2025", False), ("2025", True), ("2026", False), ("2026", True)],
    ids=["2025-input-present", "2025-input-after-plus", "2026-image-input-first", "2026-after-plus"],
)
def test_ask_uploads_the_packet_files_one_by_one_to_the_general_input(
    make_bridge: MakeBridge, fakechat: FakeChat, tmp_path: Path, dom: str, lazy_input: bool
) -> None:
    fakechat.dom = dom
    fakechat.lazy_file_input = lazy_input
    diff = tmp_path / "task.diff"
    diff.write_text("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n")
    envelope = tmp_path / "envelope.md"
    envelope.write_text("# Task api\n")

    reply = make_bridge().ask("see the files", [diff, envelope], on_sent=ignore)

    (received,) = fakechat.prompts
    assert received.file_names == ["task.diff", "envelope.md"]
    assert received.files["task.diff"] == diff.read_bytes()
    assert reply.delivery == "files"


def test_a_stale_draft_attachment_is_removed_before_attaching(
    make_bridge: MakeBridge, fakechat: FakeChat, tmp_path: Path
) -> None:
    fakechat.variant = "stale_draft"
    packet = tmp_path / "envelope.md"
    packet.write_text("# Task\n")

    reply = make_bridge().ask("see the file", [packet], on_sent=ignore)

    (received,) = fakechat.prompts
    assert received.file_names == ["envelope.md"]
    assert any("draft attachment" in n for n in reply.notes)


def test_an_inline_packet_is_typed_and_a_cut_one_goes_as_files(
    make_bridge: MakeBridge, fakechat: FakeChat, tmp_path: Path
) -> None:
    packet = tmp_path / "diff.patch"
    packet.write_text("+new line\n" * 300)
    inline = "Review this change.\n\n" + packet.read_text()

    short = make_bridge().ask("see the file", [packet], inline=inline, on_sent=ignore)

    assert short.delivery == "inline"
    assert (fakechat.prompts[0].text, fakechat.prompts[0].file_names) == (inline, [])

    fakechat.insert_limit = 1000  # the live composer can cut a long insert without a word
    cut = make_bridge().ask("see the file", [packet], inline=inline, on_sent=ignore)

    assert cut.delivery == "files"
    assert (fakechat.prompts[1].text, fakechat.prompts[1].file_names) == ("see the file", ["diff.patch"])
    assert any("was cut" in n for n in cut.notes)

    big = make_bridge(inline_limit_chars=100).ask("see the file", [packet], inline=inline, on_sent=ignore)
    assert big.delivery == "files" and fakechat.prompts[2].file_names == ["diff.patch"]


def test_a_prompt_the_composer_cuts_is_never_sent(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.insert_limit = 1000
    with pytest.raises(PromptTruncated) as cut:
        make_bridge().ask("x" * 3000, [], on_sent=ignore)
    assert (cut.value.written, cut.value.expected) == (1000, 3000)
    assert cut.value.stage == "compose"
    assert fakechat.prompts == []


@DOMS
def test_ask_enters_the_project_and_selects_and_verifies_the_model(
    make_bridge: MakeBridge, fakechat: FakeChat, dom: str
) -> None:
    fakechat.dom = dom  # 2026: the model pill mounts 1.5 s after the page
    reply = make_bridge(project="planegate", model_hint="GPT-5 Thinking").ask("hi", [], on_sent=ignore)

    (received,) = fakechat.prompts
    assert received.project == "planegate"
    assert received.model == "GPT-5 Thinking"
    assert (reply.model, reply.model_verified) == ("GPT-5 Thinking", True)
    assert "/g/g-p-" in reply.conversation_url and "/c/" in reply.conversation_url


def test_a_model_the_page_does_not_confirm_is_noted_or_refused(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.variant = "pill_unverifiable"

    reply = make_bridge(model_hint="GPT-5 Thinking").ask("hi", [], on_sent=ignore)

    assert reply.model_verified is False
    assert any("did not confirm" in n for n in reply.notes)
    assert fakechat.prompts[0].model == "GPT-5 Thinking"

    with pytest.raises(ModelNotVerified) as refused:
        make_bridge(model_hint="GPT-5 Thinking", require_model=True).ask("again", [], on_sent=ignore)
    assert refused.value.stage == "compose"
    assert [p.text for p in fakechat.prompts] == ["hi"]


def test_ask_names_the_choices_seen_when_project_or_model_is_unknown(
    make_bridge: MakeBridge, fakechat: FakeChat
) -> None:
    with pytest.raises(OptionNotFound) as project:
        make_bridge(project="nonexistent").ask("hi", [], on_sent=ignore)
    assert project.value.seen == ["planegate", "Side notes"]
    assert "'nonexistent'" in str(project.value)

    with pytest.raises(OptionNotFound) as model:
        make_bridge(model_hint="o9-ultra").ask("hi", [], on_sent=ignore)
    assert model.value.seen == ["GPT-5", "GPT-5 Thinking", "GPT-4o"]
    assert fakechat.prompts == []


@pytest.mark.parametrize(
    ("variant", "error", "stage"),
    [
        ("logged_out", LoggedOut, "login"),
        ("guest", LoggedOut, "login"),
        ("welcome_back", AccountChooser, "login"),
        ("cloudflare", CloudflareChallenge, "navigate"),
    ],
)
def test_ask_refuses_a_page_it_cannot_use_without_sending(
    make_bridge: MakeBridge, fakechat: FakeChat, variant: str, error: type[Exception], stage: str
) -> None:
    fakechat.variant = variant
    with pytest.raises(error, match="then retry") as refused:
        make_bridge().ask("hi", [], on_sent=ignore)
    assert getattr(refused.value, "stage", None) == stage
    assert fakechat.prompts == []
    if variant == "guest":
        assert "guest page" in str(refused.value)
    if variant == "welcome_back":
        assert "2 saved account(s)" in str(refused.value)


def test_the_welcome_back_picker_is_passed_with_the_configured_account(
    make_bridge: MakeBridge, fakechat: FakeChat
) -> None:
    fakechat.variant = "welcome_back"
    with pytest.raises(AccountChooser, match="none of its 2 saved account"):
        make_bridge(account_email="carol@example.com").ask("hi", [], on_sent=ignore)

    reply = make_bridge(account_email="bob@example.com").ask("hi", [], on_sent=ignore)

    assert fakechat.account_chosen == "bob@example.com"
    assert reply.markdown and [p.text for p in fakechat.prompts] == ["hi"]


def test_a_healthy_page_carrying_the_bot_management_script_is_no_challenge(
    make_bridge: MakeBridge, fakechat: FakeChat
) -> None:
    fakechat.shell_delay_s = 1.5  # only the script and an empty page until the app hydrates
    reply = make_bridge().ask("hi", [], on_sent=ignore)
    assert reply.markdown
    assert len(fakechat.prompts) == 1


@pytest.mark.parametrize("modal_on", ["load", "focus"])
def test_a_whats_new_dialog_over_the_page_is_closed(make_bridge: MakeBridge, fakechat: FakeChat, modal_on: str) -> None:
    fakechat.variant = "modal"
    fakechat.modal_on = modal_on  # "focus": it pops up over the send button after the prompt is typed
    reply = make_bridge().ask("hi", [], on_sent=ignore)
    assert [p.text for p in fakechat.prompts] == ["hi"]
    assert any("what's new" in n.lower() and "'got it'" in n for n in reply.notes)


@DOMS
def test_ask_reports_selector_drift_quickly_without_sending(
    make_bridge: MakeBridge, fakechat: FakeChat, tmp_path: Path, dom: str
) -> None:
    fakechat.dom = dom
    fakechat.variant = "drift"
    bridge = make_bridge(action_timeout_s=15)
    start = time.monotonic()
    with pytest.raises(SelectorDrift) as drift:
        bridge.ask("hi", [], on_sent=ignore, diagnostics_dir=tmp_path / "diag")
    assert time.monotonic() - start < 10
    assert drift.value.missing == ["send"]
    assert drift.value.stage == "send"
    assert 'button[data-testid="send-button"]' in drift.value.report
    assert "planegate browser doctor" in str(drift.value) and "[stage send]" in str(drift.value)
    assert fakechat.prompts == []
    shot, summary = sorted(drift.value.diagnostics, key=lambda p: p.suffix, reverse=True)
    assert shot.suffix == ".png" and shot.read_bytes().startswith(b"\x89PNG")
    data = json.loads(summary.read_text())
    assert data["stage"] == "send" and data["error_type"] == "SelectorDrift"
    assert data["selectors"]["send"] is None and data["selectors"]["composer"]["candidate"] == "#prompt-textarea"
    assert data["page"]["composer_chars"] == 2 and "title" in data["page"]


def test_a_fallback_selector_keeps_working_and_is_recorded(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.variant = "send_no_testid"
    bridge = make_bridge()

    reply = bridge.ask("hi", [], on_sent=ignore)

    assert [p.text for p in fakechat.prompts] == ["hi"]
    fallbacks = {fb.name: fb for fb in reply.fallbacks}
    assert fallbacks["send"].primary == 'button[data-testid="send-button"]'
    assert fallbacks["send"].used.startswith("#composer-submit-button")
    recorded = json.loads((bridge.lease_dir / "fallbacks.json").read_text())
    assert recorded["send"]["used"] == fallbacks["send"].used


def test_ask_waits_through_a_pause_mid_reply_until_the_turn_is_finished(
    make_bridge: MakeBridge, fakechat: FakeChat
) -> None:
    text = " ".join(f"word{i}" for i in range(30)) + "\n"
    fakechat.responder = lambda prompt, files, turn: text
    fakechat.stall_after, fakechat.stall_s = 10, 1.0  # far longer than stable_for_s: text alone proves nothing

    reply = make_bridge(stable_for_s=0.3).ask("hi", [], on_sent=ignore)

    assert reply.markdown == text


@DOMS
def test_a_false_finish_at_the_thinking_to_answer_transition_is_not_accepted(
    make_bridge: MakeBridge, fakechat: FakeChat, dom: str
) -> None:
    fakechat.dom = dom
    fakechat.variant = "false_finish"
    text = marked(" ".join(f"word{i}" for i in range(40)))
    fakechat.responder = lambda prompt, files, turn: text
    fakechat.false_finish_s = 2.0  # stop gone, action bar up, first tokens only, for 2 s

    reply = make_bridge(end_marker=END, unmarked_quiet_s=4.0).ask("hi", [], on_sent=ignore)

    turn = fakechat.turn(fakechat.conversation_id(reply.conversation_url))
    assert turn.flash_rendered, "the page never showed the false finish"
    assert reply.markdown == text
    assert reply.proof == "end marker"


def test_the_end_marker_proves_completion_fast(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    text = marked("Looks right.")
    fakechat.responder = lambda prompt, files, turn: text

    reply = make_bridge(end_marker=END, unmarked_quiet_s=30.0, poll_interval_s=0.25).ask("hi", [], on_sent=ignore)

    rendered = fakechat.wait_rendered(fakechat.conversation_id(reply.conversation_url))
    assert reply.markdown == text and reply.proof == "end marker"
    assert reply.detected_at - rendered < 1.2


def test_a_reply_without_the_asked_for_marker_needs_the_long_quiet(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.responder = lambda prompt, files, turn: "An answer that forgot the format.\n"

    reply = make_bridge(end_marker=END, unmarked_quiet_s=2.5).ask("hi", [], on_sent=ignore)

    rendered = fakechat.wait_rendered(fakechat.conversation_id(reply.conversation_url))
    assert reply.proof == "quiet"
    assert reply.detected_at - rendered >= 2.0


def test_ask_fails_when_the_reply_stops_with_an_error_and_retry_button(
    make_bridge: MakeBridge, fakechat: FakeChat
) -> None:
    fakechat.variant = "retry_error"
    fakechat.responder = lambda prompt, files, turn: " ".join(f"word{i}" for i in range(40))
    with pytest.raises(ReplyFailed, match="Something went wrong") as failed:
        make_bridge().ask("hi", [], on_sent=ignore)
    assert failed.value.stage == "wait"


def test_ask_reports_the_usage_cap_banner(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.variant = "usage_cap"
    with pytest.raises(UsageCapReached) as cap:
        make_bridge().ask("hi", [], on_sent=ignore)
    assert "usage limit" in cap.value.banner


def test_a_swallowed_send_click_is_followed_by_enter_and_sends_once(
    make_bridge: MakeBridge, fakechat: FakeChat
) -> None:
    fakechat.variant = "swallow_send"
    reply = make_bridge(send_confirm_s=1.0).ask("hi there", [], on_sent=ignore)
    assert [p.text for p in fakechat.prompts] == ["hi there"]
    assert any("pressed Enter" in n for n in reply.notes)


def test_a_send_that_never_lands_is_reported_as_such_not_as_drift(
    make_bridge: MakeBridge, fakechat: FakeChat, tmp_path: Path
) -> None:
    fakechat.variant = "dead_send"
    with pytest.raises(SendNotCommitted) as dead:
        make_bridge(send_confirm_s=1.0).ask("hi", [], on_sent=ignore, diagnostics_dir=tmp_path)
    assert dead.value.stage == "send"
    assert "send did not commit" in str(dead.value)
    assert len(dead.value.diagnostics) == 2
    assert fakechat.prompts == []


def test_only_the_durable_conversation_url_is_reported(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.transient_url_s = 2.5  # /c/WEB:<id> far longer than the action timeout
    fakechat.token_delay_s = 0.05
    fakechat.responder = lambda prompt, files, turn: " ".join(f"w{i}" for i in range(60)) + "\n"
    sent: list[str] = []

    # The reply visibly progresses, so a URL that is slow to become durable is no failure.
    reply = make_bridge(action_timeout_s=1.5).ask("hi", [], on_sent=sent.append)

    assert len(sent) == 1 and "/c/WEB:" not in sent[0]
    assert reply.conversation_url == sent[0]
    assert fakechat.conversation_id(sent[0]) in fakechat.conversations


def test_long_thinking_past_the_deadline_is_pending_with_a_heartbeat_then_read_later(
    make_bridge: MakeBridge, fakechat: FakeChat
) -> None:
    fakechat.variant = "slow"
    fakechat.slow_thinking_s = 4.0
    fakechat.responder = lambda prompt, files, turn: marked("Thought it through.")
    sent: list[str] = []
    beats: list[Progress] = []
    bridge = make_bridge(thinking_timeout_s=1.5, heartbeat_s=0.5, end_marker=END)
    start = time.monotonic()

    with pytest.raises(ReplyPending) as pending:
        bridge.ask("think hard", [], on_sent=sent.append, on_progress=beats.append)

    assert time.monotonic() - start < 1.5 + 5
    assert pending.value.conversation_url == sent[0]
    assert pending.value.status == "pro thinking"
    assert "re-read it later" in str(pending.value)
    assert [b.stage for b in beats if b.stage == "thinking"] and all(b.text_len == 0 for b in beats)
    assert {b.status for b in beats} == {"pro thinking"}
    assert not any(REASONING[:20] in repr(b) for b in beats)

    reply = bridge.read_reply(pending.value.conversation_url)

    assert reply.markdown == marked("Thought it through.")
    assert len(fakechat.prompts) == 1


def test_a_deadline_with_no_durable_url_cannot_be_pending(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.variant = "slow"
    fakechat.transient_url_s = 30.0
    sent: list[str] = []
    with pytest.raises(DeadlineExceeded) as late:
        make_bridge(thinking_timeout_s=1.0).ask("hi", [], on_sent=sent.append)
    assert "thinking" in late.value.phase and "cannot be re-read" in str(late.value)
    assert sent == []


def test_long_thinking_models_get_long_deadlines() -> None:
    from planegate.bridge import BridgeConfig

    assert BridgeConfig(endpoints=[], model_hint="GPT-5 Pro").deadlines() == (3600.0, 3600.0)
    assert BridgeConfig(endpoints=[], model_hint="Deep research").deadlines() == (3600.0, 3600.0)
    assert BridgeConfig(endpoints=[], model_hint="GPT-5 Thinking").deadlines() == (1800.0, 1800.0)
    assert BridgeConfig(endpoints=[], model_hint="GPT-5").deadlines() == (600, 1800)
    assert BridgeConfig(endpoints=[], model_hint="Prometheus").deadlines() == (600, 1800)
    custom = BridgeConfig(endpoints=[], model_hint="o9 ultra", model_timeouts={"ultra": 5400.0})
    assert custom.deadlines() == (5400.0, 5400.0)


class Crash(Exception):
    pass


def test_read_reply_waits_for_a_streaming_reply_without_sending(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    text = " ".join(f"token{i}" for i in range(40)) + '\n\n```json\n{"review_id": "N1"}\n```\n'
    fakechat.responder = lambda prompt, files, turn: text
    fakechat.thinking_s, fakechat.token_delay_s = 0.3, 0.08
    bridge = make_bridge()

    def crash(url: str) -> None:
        raise Crash(url)  # the caller "dies" right after recording the URL

    with pytest.raises(Crash) as crashed:
        bridge.ask("review please", [], on_sent=crash)
    url = str(crashed.value)
    opened_at = time.time()

    reply = bridge.read_reply(url)

    assert opened_at < fakechat.turn(fakechat.conversation_id(url)).finished_at, "the reply had already finished"
    assert reply.markdown == text
    assert reply.conversation_url == url
    assert reply.detected_at >= fakechat.turn(fakechat.conversation_id(url)).finished_at
    assert len(fakechat.prompts) == 1


def test_read_reply_of_a_reply_still_thinking_is_pending(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.variant = "slow"
    bridge = make_bridge(thinking_timeout_s=1.0)
    with pytest.raises(ReplyPending) as pending:
        bridge.ask("hi", [], on_sent=ignore)

    with pytest.raises(ReplyPending) as again:
        make_bridge(reread_timeout_s=1.5).read_reply(pending.value.conversation_url)
    assert again.value.conversation_url == pending.value.conversation_url
    assert len(fakechat.prompts) == 1


@DOMS
def test_follow_up_waits_for_the_conversation_to_hydrate_then_sends_in_it(
    make_bridge: MakeBridge, fakechat: FakeChat, dom: str
) -> None:
    fakechat.dom = dom
    fakechat.hydrate_turn_s = 0.3  # 2026: turns render one by one, then the composer is reset
    fakechat.responder = lambda prompt, files, turn: f"answer {turn} to: {prompt}"
    bridge = make_bridge()
    first = bridge.ask("first question", [], on_sent=ignore)
    second = bridge.follow_up(first.conversation_url, "second question", on_sent=ignore)
    sent: list[str] = []

    third = bridge.follow_up(first.conversation_url, "repair: send only the JSON block", on_sent=sent.append)

    assert second.markdown == "answer 1 to: second question\n"
    assert third.markdown == "answer 2 to: repair: send only the JSON block\n"
    assert third.conversation_url == first.conversation_url == sent[0]
    conv = fakechat.conversation_id(first.conversation_url)
    assert [(p.conversation_id, p.turn_index, p.text) for p in fakechat.prompts] == [
        (conv, 0, "first question"),
        (conv, 1, "second question"),
        (conv, 2, "repair: send only the JSON block"),
    ]


def test_read_reply_refuses_a_url_that_is_not_a_conversation(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    with pytest.raises(ReplyFailed, match="did not open a conversation"):
        make_bridge().read_reply(fakechat.url)
    with pytest.raises(ReplyFailed, match="did not open a conversation"):
        make_bridge().read_reply(fakechat.url + "c/WEB:abc123")
    assert fakechat.prompts == []
