"""The code's layering holds, and the import contracts that keep it so really check the code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"


def lint(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT, "--config", str(config), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_project_keeps_every_import_contract() -> None:
    result = lint(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_contract_the_code_breaks_fails_naming_the_import(tmp_path: Path) -> None:
    # get_status shows the gates, so the report wing imports the gates: forbidding that must fail.
    config = tmp_path / "contracts.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["planegate.tools"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "report may not use the gates"\n'
        'type = "forbidden"\n'
        'source_modules = ["planegate.tools.report"]\n'
        'forbidden_modules = ["planegate.tools.gates"]\n',
        encoding="utf-8",
    )
    result = lint(config)
    assert result.returncode == 1
    assert "planegate.tools.report.activity -> planegate.tools.gates" in result.stdout
