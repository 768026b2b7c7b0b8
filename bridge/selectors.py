"""The selector profile: ChatGPT's DOM facts kept as data, never in code.

A profile maps each *named* selector (``composer``, ``send``, ``stop`` ...) to an ordered list of
candidate CSS selectors, plus a few page texts (Cloudflare title, usage-cap phrases). The packaged
``profile.json`` is the baseline; a user override file (``PLANEGATE_HOME/browser/selectors.json``)
replaces whole candidate lists by name, so a user can repair drift without a release.

Invariants:
- a named selector resolves to its first candidate that matches (a visible match beats a hidden
  one); when no candidate matches, the name is *missing*, which is drift, and the caller raises
  ``SelectorDrift`` after a short grace instead of waiting on it;
- a name that resolves to a later candidate than its first is a *fallback in use*: the page
  drifted from the primary candidate and only the fallback kept it working. ``Match.fallback``
  says so, and callers record it (``doctor`` shows it);
- the merged profile keeps the higher of the two versions, and remembers both, so a stale
  override can be reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Fallback
from .errors import ProfileError, SelectorDrift
from .pagejs import SCAN_JS
from .session import evaluate_bounded, playwright_errors

if TYPE_CHECKING:
    from playwright.sync_api import Page

PACKAGED = "profile.json"


@dataclass(frozen=True)
class Match:
    """Where a named selector landed on the page: the candidate (and its position in the list),
    how many elements, any visible."""

    candidate: str
    count: int
    visible: bool
    index: int = 0

    @property
    def fallback(self) -> bool:
        return self.index > 0


@dataclass(frozen=True)
class Profile:
    version: int
    base_url: str
    selectors: Mapping[str, tuple[str, ...]]
    texts: Mapping[str, tuple[str, ...]]
    packaged_version: int
    override_version: int | None = None
    override_path: Path | None = None
    overridden: tuple[str, ...] = field(default_factory=tuple)

    def candidates(self, name: str) -> tuple[str, ...]:
        try:
            return self.selectors[name]
        except KeyError:
            raise ProfileError(
                f"the selector profile has no entry {name!r}; add it to PLANEGATE_HOME/browser/selectors.json "
                f"(known names: {', '.join(sorted(self.selectors))})"
            ) from None

    def js_args(self) -> dict[str, Any]:
        """The profile as plain data for the in-page scripts."""
        return {
            "selectors": {k: list(v) for k, v in self.selectors.items()},
            "texts": {k: list(v) for k, v in self.texts.items()},
        }

    def scan(self, page: Page, names: Iterable[str], timeout: float = 15.0) -> dict[str, Match | None]:
        """Resolve several named selectors in one round trip; ``None`` marks a missing name."""
        wanted = list(names)
        for name in wanted:
            self.candidates(name)
        with playwright_errors("reading the page (is the tab responding?)", timeout, page.url):
            raw = evaluate_bounded(page, SCAN_JS, {**self.js_args(), "names": wanted}, timeout)
        return {name: Match(**hit) if hit else None for name, hit in raw.items()}

    def require(
        self, page: Page, names: Iterable[str], grace: float, *, step: str, raise_missing: bool = True
    ) -> dict[str, Match]:
        """Wait at most ``grace`` seconds for every name to match; raise ``SelectorDrift`` naming the rest.

        Pages render asynchronously, so a name gets a short grace, but never more: a missing
        selector is reported, not waited on.
        """
        wanted = list(names)
        deadline = time.monotonic() + grace
        while True:
            found = self.scan(page, wanted)
            missing = [n for n, m in found.items() if m is None]
            if not missing or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if missing and raise_missing:
            raise SelectorDrift(missing, self.drift_report(missing, page.url), step=step)
        return {n: m for n, m in found.items() if m is not None}

    def fallbacks(self, found: Mapping[str, Match | None]) -> list[Fallback]:
        """The names in ``found`` that matched only through a later candidate."""
        return [
            Fallback(name, self.candidates(name)[0], m.candidate)
            for name, m in found.items()
            if m is not None and m.fallback
        ]

    def drift_report(self, missing: Iterable[str], url: str) -> str:
        lines = [f"page {url}, profile version {self.version}:"]
        for name in missing:
            lines.append(f"  {name}: none of {', '.join(self.candidates(name))} matched")
        return "\n".join(lines)


def _candidate_lists(raw: object, where: str, key: str) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: {key!r} must be an object of name → [candidates], got {type(raw).__name__}")
    out: dict[str, tuple[str, ...]] = {}
    for name, value in raw.items():
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(s, str) and s.strip() for s in items):
            raise ProfileError(
                f"{where}: {key}.{name} must be a non-empty list of non-empty strings, got {value!r}; fix that entry"
            )
        out[str(name)] = tuple(items)
    return out


def _read(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{where} is not valid JSON ({exc}); fix or delete that file") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{where} must hold a JSON object, got {type(data).__name__}; fix or delete that file")
    version = data.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ProfileError(f"{where}: 'version' must be a non-negative integer, got {version!r}")
    base_url = data.get("base_url")
    if base_url is not None and not (isinstance(base_url, str) and base_url.startswith(("http://", "https://"))):
        raise ProfileError(f"{where}: 'base_url' must be an http(s) URL, got {base_url!r}")
    return data


def load_profile(override: Path | None = None) -> Profile:
    """The packaged profile, merged with ``override`` when that file exists.

    Raises ``ProfileError`` naming the file and key when either file is malformed.
    """
    packaged_text = resources.files(__package__ or "planegate.bridge").joinpath(PACKAGED).read_text(encoding="utf-8")
    base = _read(packaged_text, f"packaged {PACKAGED}")
    selectors = _candidate_lists(base.get("selectors"), PACKAGED, "selectors")
    texts = _candidate_lists(base.get("texts"), PACKAGED, "texts")
    packaged_version = int(base.get("version", 0))
    base_url = str(base.get("base_url") or "https://chatgpt.com/")
    if override is None or not override.exists():
        return Profile(packaged_version, base_url, selectors, texts, packaged_version)

    where = str(override)
    try:
        user = _read(override.read_text(encoding="utf-8"), where)
    except OSError as exc:
        raise ProfileError(f"cannot read selector override {where} ({exc}); fix its permissions or delete it") from exc
    user_selectors = _candidate_lists(user.get("selectors"), where, "selectors")
    user_texts = _candidate_lists(user.get("texts"), where, "texts")
    user_version = int(user.get("version", 0))
    return Profile(
        version=max(packaged_version, user_version),
        base_url=str(user.get("base_url") or base_url),
        selectors={**selectors, **user_selectors},
        texts={**texts, **user_texts},
        packaged_version=packaged_version,
        override_version=user_version,
        override_path=override,
        overridden=tuple(sorted(user_selectors)),
    )
