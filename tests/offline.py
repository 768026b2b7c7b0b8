"""Package installs without the network, for tests that set real projects up.

``wheelhouse`` turns distributions installed in this test run's own environment (pytest and what
it needs) into wheel files, so a repository's virtualenv can be made with ``pip install
--no-index --find-links`` and ``uv sync`` offline. ``make_wheel`` builds a tiny package's wheel by
hand (a "dev dependency" no index has). ``offline_home`` writes pip, uv and npm user
configuration into the test's ``HOME`` that forbids any index or registry, so a setup step that
would download fails instead.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as metadata
import re
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

WHEEL_FILE = "Wheel-Version: 1.0\nGenerator: planegate-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
_SKIPPED = ("INSTALLER", "direct_url.json", "REQUESTED", "RECORD")


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "_", text).lower()


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def _write_wheel(target: Path, files: dict[str, bytes], dist_info: str) -> Path:
    record = [_record_line(path, data) for path, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return target


def wheel_of_installed(name: str, folder: Path) -> Path:
    """A wheel of the installed distribution ``name`` (pure Python ones only)."""
    dist = metadata.distribution(name)
    normal, version = _name(dist.metadata["Name"]), dist.version
    base = Path(str(dist.locate_file("")))
    files: dict[str, bytes] = {}
    dist_info = ""
    for entry in dist.files or []:
        path = str(entry)
        if path.startswith("..") or "__pycache__" in path or path.endswith(".pyc"):
            continue
        if ".dist-info/" in path:
            dist_info = path.split("/")[0]
            if path.rsplit("/", 1)[-1] in _SKIPPED:
                continue
        source = base / path
        if source.is_file():
            files[path] = source.read_bytes()
    if not any(p.endswith("/WHEEL") for p in files):
        files[f"{dist_info}/WHEEL"] = WHEEL_FILE.encode()
    return _write_wheel(folder / f"{normal}-{version}-py3-none-any.whl", files, dist_info)


def wheelhouse(folder: Path, names: list[str]) -> Path:
    """Wheels of ``names`` and everything they require here (markers evaluated for this Python)."""
    folder.mkdir(parents=True, exist_ok=True)
    environment = default_environment()
    seen: set[str] = set()
    queue = list(names)
    while queue:
        name = queue.pop()
        if _name(name) in seen:
            continue
        seen.add(_name(name))
        wheel_of_installed(name, folder)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({**environment, "extra": ""}):
                queue.append(requirement.name)
    return folder


def make_wheel(folder: Path, name: str, version: str, modules: dict[str, str]) -> Path:
    """A pure-Python wheel of ``modules`` (path inside the wheel → source)."""
    folder.mkdir(parents=True, exist_ok=True)
    dist_info = f"{_name(name)}-{version}.dist-info"
    files = {path: text.encode() for path, text in modules.items()}
    files[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    files[f"{dist_info}/WHEEL"] = WHEEL_FILE.encode()
    return _write_wheel(folder / f"{_name(name)}-{version}-py3-none-any.whl", files, dist_info)


def offline_home(home: Path, wheels: Path) -> None:
    """pip, uv and npm configured in ``home`` to install from ``wheels`` only and never reach a
    registry (npm's points at a closed port, and is offline)."""
    (home / ".config" / "pip").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "pip" / "pip.conf").write_text(
        f"[global]\nno-index = true\nfind-links = {wheels}\ndisable-pip-version-check = true\n"
    )
    (home / ".config" / "uv").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "uv" / "uv.toml").write_text(f'no-index = true\nfind-links = ["{wheels}"]\n')
    (home / ".npmrc").write_text(
        "registry=http://127.0.0.1:9/\noffline=true\naudit=false\nfund=false\nupdate-notifier=false\n"
    )
