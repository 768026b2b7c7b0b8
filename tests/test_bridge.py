"""The ChatGPT bridge against a local imitation of ChatGPT, driven by real headless Chromium over CDP."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from planegate.bridge import (
    ChatGPTBridge,
    CloudflareChallenge,
    DeadlineExceeded,
    LoggedOut,
    OptionNotFound,
    ReplyFailed,
    SelectorDrift,
    UsageCapReached,
)
from tests.fakechat import FakeChat

pytest_plugins = ["tests.fakechat.fixtures"]
pytestmark = pytest.mark.browser

MakeBridge = Callable[..., ChatGPTBridge]

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
```

```json
{REVIEW_JSON}
```
"""


def test_ask_returns_the_reply_as_markdown_with_the_json_block_byte_exact(
    make_bridge: MakeBridge, fakechat: FakeChat
) -> None:
    fakechat.responder = lambda prompt, files, turn: REPLY
    bridge = make_bridge(poll_interval_s=0.25, stable_for_s=0.8)
    sent: list[tuple[str, float]] = []
    prompt = "Review this.\n\n  indented line\nreview_id: NONCE-7f3a"

    reply = bridge.ask(prompt, [], on_sent=lambda url: sent.append((url, time.time())))

    assert f"```json\n{REVIEW_JSON}\n```" in reply.markdown
    assert reply.markdown == REPLY
    assert [url for url, _ in sent] == [reply.conversation_url]
    assert "/c/" in reply.conversation_url
    assert sent[0][1] <= reply.finished_at <= reply.detected_at
    assert [p.text for p in fakechat.prompts] == [prompt]


@pytest.mark.parametrize("lazy_input", [False, True], ids=["input-present", "input-after-plus-button"])
def test_ask_uploads_the_packet_files(
    make_bridge: MakeBridge, fakechat: FakeChat, tmp_path: Path, lazy_input: bool
) -> None:
    fakechat.lazy_file_input = lazy_input
    diff = tmp_path / "task.diff"
    diff.write_text("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n")
    envelope = tmp_path / "envelope.md"
    envelope.write_text("# Task api\n")

    make_bridge().ask("see the files", [diff, envelope], on_sent=lambda url: None)

    (received,) = fakechat.prompts
    assert received.file_names == ["task.diff", "envelope.md"]
    assert received.files["task.diff"] == diff.read_bytes()


def test_ask_enters_the_project_and_selects_the_model(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    reply = make_bridge(project="planegate", model_hint="GPT-5 Thinking").ask("hi", [], on_sent=lambda url: None)

    (received,) = fakechat.prompts
    assert received.project == "planegate"
    assert received.model == "GPT-5 Thinking"
    assert "/g/g-p-" in reply.conversation_url and "/c/" in reply.conversation_url


def test_ask_names_the_choices_seen_when_project_or_model_is_unknown(
    make_bridge: MakeBridge, fakechat: FakeChat
) -> None:
    with pytest.raises(OptionNotFound) as project:
        make_bridge(project="nonexistent").ask("hi", [], on_sent=lambda url: None)
    assert project.value.seen == ["planegate", "Side notes"]
    assert "'nonexistent'" in str(project.value)

    with pytest.raises(OptionNotFound) as model:
        make_bridge(model_hint="o9-ultra").ask("hi", [], on_sent=lambda url: None)
    assert model.value.seen == ["GPT-5", "GPT-5 Thinking", "GPT-4o"]
    assert fakechat.prompts == []


@pytest.mark.parametrize(
    ("variant", "error"),
    [("logged_out", LoggedOut), ("cloudflare", CloudflareChallenge)],
)
def test_ask_refuses_a_page_it_cannot_use_without_sending(
    make_bridge: MakeBridge, fakechat: FakeChat, variant: str, error: type[Exception]
) -> None:
    fakechat.variant = variant
    with pytest.raises(error, match="then retry"):
        make_bridge().ask("hi", [], on_sent=lambda url: None)
    assert fakechat.prompts == []


def test_ask_reports_selector_drift_quickly_without_sending(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.variant = "drift"
    bridge = make_bridge(action_timeout_s=15)
    start = time.monotonic()
    with pytest.raises(SelectorDrift) as drift:
        bridge.ask("hi", [], on_sent=lambda url: None)
    assert time.monotonic() - start < 8
    assert drift.value.missing == ["send"]
    assert 'button[data-testid="send-button"]' in drift.value.report
    assert "planegate browser doctor" in str(drift.value)
    assert fakechat.prompts == []


def test_ask_waits_through_a_pause_mid_reply_until_the_turn_is_finished(
    make_bridge: MakeBridge, fakechat: FakeChat
) -> None:
    text = " ".join(f"word{i}" for i in range(30)) + "\n"
    fakechat.responder = lambda prompt, files, turn: text
    fakechat.stall_after, fakechat.stall_s = 10, 1.0  # far longer than stable_for_s: text alone proves nothing

    reply = make_bridge(stable_for_s=0.3).ask("hi", [], on_sent=lambda url: None)

    assert reply.markdown == text


def test_ask_fails_when_the_reply_stops_with_an_error_and_retry_button(
    make_bridge: MakeBridge, fakechat: FakeChat
) -> None:
    fakechat.variant = "retry_error"
    fakechat.responder = lambda prompt, files, turn: " ".join(f"word{i}" for i in range(40))
    with pytest.raises(ReplyFailed, match="Something went wrong"):
        make_bridge().ask("hi", [], on_sent=lambda url: None)


def test_ask_reports_the_usage_cap_banner(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.variant = "usage_cap"
    with pytest.raises(UsageCapReached) as cap:
        make_bridge().ask("hi", [], on_sent=lambda url: None)
    assert "usage limit" in cap.value.banner


def test_ask_gives_up_at_the_thinking_deadline(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.variant = "slow"
    sent: list[str] = []
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as late:
        make_bridge(thinking_timeout_s=1.0).ask("hi", [], on_sent=sent.append)
    assert time.monotonic() - start < 1.0 + 5
    assert "thinking" in late.value.phase
    assert late.value.url == sent[0]


class Crash(Exception):
    pass


def test_read_reply_waits_for_a_streaming_reply_without_sending(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    text = " ".join(f"token{i}" for i in range(40)) + '\n\n```json\n{"review_id": "N1"}\n```\n'
    fakechat.responder = lambda prompt, files, turn: text
    fakechat.thinking_s, fakechat.token_delay_s = 0.3, 0.06
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


def test_follow_up_sends_a_second_message_in_the_same_conversation(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    fakechat.responder = lambda prompt, files, turn: f"answer {turn} to: {prompt}"
    bridge = make_bridge()
    first = bridge.ask("first question", [], on_sent=lambda url: None)
    sent: list[str] = []

    second = bridge.follow_up(first.conversation_url, "repair: send only the JSON block", on_sent=sent.append)

    assert second.markdown == "answer 1 to: repair: send only the JSON block\n"
    assert second.conversation_url == first.conversation_url == sent[0]
    assert [(p.conversation_id, p.turn_index) for p in fakechat.prompts] == [
        (fakechat.conversation_id(first.conversation_url), 0),
        (fakechat.conversation_id(first.conversation_url), 1),
    ]


def test_read_reply_refuses_a_url_that_is_not_a_conversation(make_bridge: MakeBridge, fakechat: FakeChat) -> None:
    with pytest.raises(ReplyFailed, match="did not open a conversation"):
        make_bridge().read_reply(fakechat.url)
    assert fakechat.prompts == []
