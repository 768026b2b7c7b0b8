"""Bridge latency against the local fake ChatGPT page, printed as one JSON object.

Every run is a review-shaped reply on the 2026 page that first shows a *false finish*: after a
few tokens the stop control disappears and the turn's action bar shows for ``--flash`` seconds
while the reply is still coming (what Thinking/Pro models do at the thinking→answer
transition). The reply then streams on and ends with the prompt's end marker.

Measures, with the bridge's default timing settings (plus the review's end marker):
- finished → recorded: from the page showing the finished reply (its action bar; the page
  reports the moment) to ``ChatGPTBridge.ask`` returning the reply, i.e. when a caller records
  it. Target ≤ 1.2 s (every run), with the false finish never accepted: each run checks the
  reply is the whole text and that the page really showed the false finish.
- the whole round trip through the bridge vs a bare Playwright script doing the same clicks
  (fill the composer, click send, wait for the copy button, read the text) on a page without
  the false finish. The bare script has no defence against the false finish; the ratio is the
  cost of the bridge's checks (lease, readiness, login proof, send confirmation, completion
  proof, the copy-button read) plus the flash it waits out.

Run: ``.venv/bin/python bench/bench_bridge.py [--runs N] [--flash S]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fakechat

from planegate.bridge import BridgeConfig, ChatGPTBridge, LaunchedBrowser, launch_browser
from tests.fakechat import FakeChat

END = "END_PLANEGATE_REVIEW"
REPLY = (
    "## Review\n\nThe change looks right; one finding below.\n\n"
    + " ".join(f"word{i}" for i in range(120))
    + '\n\nBEGIN_PLANEGATE_REVIEW\n```json\n{"review_id": "NONCE", "verdict": "approve", "summary": "ok", '
    '"findings": []}\n```\n' + END + "\n"
)


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(0.9 * len(ordered)) - 1, 0)]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "p90": round(p90(values), 3),
        "max": round(max(values), 3),
    }


def bare_round_trip(endpoint: str, url: str, prompt: str) -> float:
    """The same clicks with nothing else: the floor a careful bridge is compared against."""
    from playwright.sync_api import sync_playwright

    start = time.perf_counter()
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.connect_over_cdp(endpoint, timeout=15_000)
        page = browser.contexts[0].new_page()
        try:
            page.goto(url, wait_until="domcontentloaded", timeout=15_000)
            page.locator("#prompt-textarea").fill(prompt, timeout=15_000)
            page.locator('button[data-testid="send-button"]').click(timeout=15_000)
            page.locator('[data-testid="copy-turn-action-button"]').last.wait_for(state="visible", timeout=60_000)
            text = page.locator('[data-message-author-role="assistant"] .markdown').last.inner_text(timeout=15_000)
            assert "NONCE" in text
        finally:
            page.close()
    finally:
        pw.stop()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--flash", type=float, default=1.5, help="seconds the false finish shows")
    args = parser.parse_args()

    fake = FakeChat(lambda prompt, files, turn: REPLY).start()
    fake.thinking_s, fake.token_delay_s = 0.5, 0.01
    fake.false_finish_s = args.flash
    workdir = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    browser: LaunchedBrowser | None = None
    try:
        home = {"HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir / "config"), "XDG_CACHE_HOME": str(workdir)}
        browser = launch_browser(
            workdir / "profile", executable=None, port=0, headless=True, env={**os.environ, **home}
        )
        config = BridgeConfig(endpoints=[browser.endpoint.url], base_url=fake.url, end_marker=END)
        bridge = ChatGPTBridge(config, workdir / "leases")
        bare_round_trip(browser.endpoint.url, fake.url, "warm-up")  # first page load pays for caches

        latencies: list[float] = []
        bridge_trips: list[float] = []
        bare_trips: list[float] = []
        false_accepted = 0
        flashes_shown = 0
        for i in range(args.runs):
            fake.variant = "false_finish"
            start = time.perf_counter()
            reply = bridge.ask(f"review {i}", [], on_sent=lambda url: None)
            returned = time.time()
            bridge_trips.append(time.perf_counter() - start)
            turn = fake.turn(fake.conversation_id(reply.conversation_url))
            flashes_shown += turn.flash_rendered
            false_accepted += reply.markdown != REPLY
            latencies.append(returned - fake.wait_rendered(fake.conversation_id(reply.conversation_url)))
            fake.variant = "normal"
            bare_trips.append(bare_round_trip(browser.endpoint.url, fake.url, f"bare {i}"))

        bridge_median, bare_median = statistics.median(bridge_trips), statistics.median(bare_trips)
        meets = max(latencies) <= 1.2 and false_accepted == 0 and flashes_shown == args.runs
        result: dict[str, Any] = {
            "bench": "bridge",
            "runs": args.runs,
            "browser": browser.endpoint.browser,
            "page": "fakechat dom 2026, variant false_finish",
            "settings": {
                "poll_interval_s": config.poll_interval_s,
                "marker_quiet_s": config.marker_quiet_s,
                "bar_confirm_polls": config.bar_confirm_polls,
                "unmarked_quiet_s": config.unmarked_quiet_s,
                "false_finish_shown_s": args.flash,
            },
            "finished_to_recorded_s": {**summary(latencies), "target_max": 1.2},
            "false_finish": {"shown": flashes_shown, "accepted": false_accepted},
            "round_trip_s": {
                "bridge_median": round(bridge_median, 3),
                "bare_playwright_median": round(bare_median, 3),
                "ratio": round(bridge_median / bare_median, 2),
                "reply_stream_s_approx": round(
                    fake.thinking_s + len(REPLY.split()) * fake.token_delay_s + args.flash, 2
                ),
            },
            "target": "reply finished -> recorded <= 1.2 s in every run, false finish never accepted",
            "meets_target": meets,
        }
        print(json.dumps(result))
    finally:
        if browser is not None:
            browser.stop()
        fake.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
