"""What the page looked like when the bridge failed: a screenshot and a DOM summary, on disk.

``capture`` writes ``bridge-<stage>-<time>.png`` and ``….json`` (URL, title, the stage and error,
the last six turns with their text and buttons, 5 kB of page text, and which candidate of every
named selector matches) into the directory the caller gave. It is best effort and bounded: it
never raises, so a failure to capture cannot hide the failure being captured.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .pagejs import DIAGNOSE_JS
from .selectors import Profile
from .session import evaluate_bounded

if TYPE_CHECKING:
    from playwright.sync_api import Page

CAPTURE_TIMEOUT_S = 5.0


def capture(page: Page, directory: Path, stage: str, error: BaseException, profile: Profile) -> tuple[Path, ...]:
    """Save a screenshot and a DOM summary of ``page``; return the files written."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return ()
    stem = f"bridge-{stage or 'unknown'}-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while (directory / f"{stem}.json").exists():
        n += 1
        stem = f"{stem.split('~')[0]}~{n}"
    written: list[Path] = []
    summary: dict[str, Any] = {"stage": stage, "error": str(error), "error_type": type(error).__name__}
    if page.is_closed():
        summary["page"] = "closed"
    else:
        shot = directory / f"{stem}.png"
        try:
            page.screenshot(path=str(shot), timeout=CAPTURE_TIMEOUT_S * 1000, full_page=False)
            written.append(shot)
        except PlaywrightError as exc:
            summary["screenshot_error"] = str(exc).splitlines()[0]
        try:
            summary["page"] = evaluate_bounded(page, DIAGNOSE_JS, profile.js_args(), CAPTURE_TIMEOUT_S)
            found = profile.scan(page, sorted(profile.selectors), timeout=CAPTURE_TIMEOUT_S)
            summary["selectors"] = {
                name: None if m is None else {"candidate": m.candidate, "index": m.index, "visible": m.visible}
                for name, m in found.items()
            }
        except Exception as exc:  # noqa: BLE001 - a broken page must not mask the error being reported
            summary["page_error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    path = directory / f"{stem}.json"
    with contextlib.suppress(OSError):
        path.write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        written.append(path)
    return tuple(written)
