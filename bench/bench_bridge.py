"""Bridge latency against the local fake ChatGPT page, printed as one JSON object.

Measures, with the bridge's default timing settings:
- finished → returned: the time from the page showing the finished reply (its copy button; the
  page reports the moment) to ``ChatGPTBridge.ask`` returning. Target ≤ 1.2 s (median and p90).
- the whole round trip through the bridge vs a bare Playwright script doing the same clicks
  (fill the composer, click send, wait for the copy button, read the text) on the same page.
  The difference is the bridge's safety margin: lease, readiness and drift checks, and the
  ``stable_for_s`` proof that the text stopped changing.

Run: ``.venv/bin/python bench/bench_bridge.py [--runs N]``.
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

REPLY = (
    "## Review\n\nThe change looks right; one finding below.\n\n"
    + " ".join(f"word{i}" for i in range(120))
    + '\n\n```json\n{"review_id": "NONCE", "verdict": "approve", "summary": "ok", "findings": []}\n```\n'
)


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(0.9 * len(ordered)) - 1, 0)]


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
    args = parser.parse_args()

    fake = FakeChat(lambda prompt, files, turn: REPLY).start()
    fake.thinking_s, fake.token_delay_s = 0.5, 0.01
    workdir = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    browser: LaunchedBrowser | None = None
    try:
        home = {"HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir / "config"), "XDG_CACHE_HOME": str(workdir)}
        browser = launch_browser(
            workdir / "profile", executable=None, port=0, headless=True, env={**os.environ, **home}
        )
        config = BridgeConfig(endpoints=[browser.endpoint.url], base_url=fake.url)
        bridge = ChatGPTBridge(config, workdir / "leases")
        bare_round_trip(browser.endpoint.url, fake.url, "warm-up")  # first page load pays for caches

        latencies: list[float] = []
        bridge_trips: list[float] = []
        bare_trips: list[float] = []
        for i in range(args.runs):
            start = time.perf_counter()
            reply = bridge.ask(f"review {i}", [], on_sent=lambda url: None)
            returned = time.time()
            bridge_trips.append(time.perf_counter() - start)
            latencies.append(returned - fake.wait_rendered(fake.conversation_id(reply.conversation_url)))
            bare_trips.append(bare_round_trip(browser.endpoint.url, fake.url, f"bare {i}"))

        bridge_median, bare_median = statistics.median(bridge_trips), statistics.median(bare_trips)
        result: dict[str, Any] = {
            "bench": "bridge",
            "runs": args.runs,
            "browser": browser.endpoint.browser,
            "settings": {"poll_interval_s": config.poll_interval_s, "stable_for_s": config.stable_for_s},
            "finished_to_returned_s": {
                "median": round(statistics.median(latencies), 3),
                "p90": round(p90(latencies), 3),
                "max": round(max(latencies), 3),
                "target": 1.2,
                "ok": p90(latencies) <= 1.2,
            },
            "round_trip_s": {
                "bridge_median": round(bridge_median, 3),
                "bare_playwright_median": round(bare_median, 3),
                "ratio": round(bridge_median / bare_median, 2),
                "reply_stream_s_approx": round(fake.thinking_s + len(REPLY.split()) * fake.token_delay_s, 2),
            },
            "target": "reply finished -> returned p90 <= 1.2 s",
            "meets_target": p90(latencies) <= 1.2,
        }
        print(json.dumps(result))
    finally:
        if browser is not None:
            browser.stop()
        fake.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
