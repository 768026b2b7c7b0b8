"""Secrets in added lines: git diffs parsed into added lines, scanned with detect-secrets."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from planegate.tools.errors import InvalidInput
from planegate.tools.gates.secrets import SecretFinding, added_lines, scan_added_lines, scan_diff
from tests.helpers import commit_all, git

# Made-up credentials in the shapes detect-secrets knows; none of them is real.
FAKE_KEY_ID = "AKIA" + "Q3EGRZ7XWJ5TK4MB"
FAKE_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "Q3EGRZ7XWJ"
PRIVATE_KEY_HEADER = "-----BEGIN RSA " + "PRIVATE KEY-----"

CLEAN_CODE = """\
from app.forms import form

password_field = form.get("password")
PASSWORD_MIN_LENGTH = 12


def check_password(user, password):
    return hasher.verify(password, user.password_hash)


token = request.headers.get("Authorization")
secret_name = os.environ["SECRET_NAME"]
"""


def diff(repo: Path, base: str = "HEAD~1", head: str = "HEAD") -> str:
    return git(repo, "diff", "--no-color", "-U0", "--no-ext-diff", base, head)


def write(repo: Path, name: str, text: str) -> None:
    target = repo / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def test_fake_aws_credentials_are_found_at_their_path_and_line(repo: Path) -> None:
    write(repo, "config/settings.py", "DEBUG = False\nREGION = 'eu-west-1'\n")
    commit_all(repo, "settings")
    write(
        repo,
        "config/settings.py",
        f'DEBUG = False\nAWS_ACCESS_KEY_ID = "{FAKE_KEY_ID}"\nREGION = "eu-west-1"\n'
        f'aws_secret_access_key = "{FAKE_SECRET_KEY}"\n',
    )
    commit_all(repo, "credentials")

    findings = scan_diff(diff(repo))

    assert SecretFinding("config/settings.py", 2, "AWS Access Key") in findings
    assert {f.line for f in findings} == {2, 4}
    assert {f.path for f in findings} == {"config/settings.py"}
    assert "Secret Keyword" in {f.kind for f in findings if f.line == 4}
    assert FAKE_KEY_ID not in repr(findings)
    assert FAKE_SECRET_KEY not in repr(findings)


def test_a_private_key_header_is_found(repo: Path) -> None:
    write(repo, "deploy/id_rsa", f"{PRIVATE_KEY_HEADER}\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n")
    commit_all(repo, "key")
    assert SecretFinding("deploy/id_rsa", 1, "Private Key") in scan_diff(diff(repo))


def test_ordinary_code_about_passwords_is_not_flagged(repo: Path) -> None:
    write(repo, "app/auth.py", CLEAN_CODE)
    commit_all(repo, "auth")
    assert len(added_lines(diff(repo))["app/auth.py"]) == CLEAN_CODE.count("\n")
    assert scan_diff(diff(repo)) == []


def test_removed_lines_are_never_scanned(repo: Path) -> None:
    write(repo, "config/settings.py", f'AWS_ACCESS_KEY_ID = "{FAKE_KEY_ID}"\nREGION = "eu-west-1"\n')
    commit_all(repo, "oops")
    write(repo, "config/settings.py", 'AWS_ACCESS_KEY_ID = os.environ["AWS_ACCESS_KEY_ID"]\nREGION = "eu-west-1"\n')
    commit_all(repo, "fix")
    assert added_lines(diff(repo)) == {
        "config/settings.py": [(1, 'AWS_ACCESS_KEY_ID = os.environ["AWS_ACCESS_KEY_ID"]')]
    }
    assert scan_diff(diff(repo)) == []
    (repo / "config/settings.py").unlink()
    commit_all(repo, "delete")
    assert scan_diff(diff(repo)) == []


def test_a_path_with_spaces_is_reported_by_its_real_name(repo: Path) -> None:
    write(repo, "config/my settings.py", f'KEY = "{FAKE_KEY_ID}"\n')
    commit_all(repo, "spaces")
    assert scan_diff(diff(repo)) == [SecretFinding("config/my settings.py", 1, "AWS Access Key")]


def test_a_renamed_file_is_reported_under_its_new_name(repo: Path) -> None:
    body = "".join(f"VALUE_{i} = {i}\n" for i in range(20))
    write(repo, "old/name.py", body)
    commit_all(repo, "before rename")
    (repo / "old/name.py").unlink()
    write(repo, "new/name.py", body + f'KEY = "{FAKE_KEY_ID}"\n')
    commit_all(repo, "rename")
    text = diff(repo)
    assert "rename to new/name.py" in text
    assert scan_diff(text) == [SecretFinding("new/name.py", 21, "AWS Access Key")]


def test_quoted_paths_binary_files_and_header_lookalikes(repo: Path) -> None:
    write(repo, "notes.sql", "select 1;\n")
    (repo / "blob.bin").write_bytes(b"\x00\x01")
    commit_all(repo, "base")
    write(repo, "tab\there.py", "x = 1\n")
    write(repo, "ünï.py", "y = 2")  # no newline at end of file
    write(repo, "notes.sql", "-- a/b\n++ b/evil\nselect 2;\n")
    (repo / "blob.bin").write_bytes(b"\x00\x02" + FAKE_KEY_ID.encode())
    commit_all(repo, "odd names")

    lines = added_lines(diff(repo))

    assert lines == {
        "notes.sql": [(1, "-- a/b"), (2, "++ b/evil"), (3, "select 2;")],
        "tab\there.py": [(1, "x = 1")],
        "ünï.py": [(1, "y = 2")],
    }


def test_added_lines_counts_context_lines_in_wider_diffs(repo: Path) -> None:
    write(repo, "a.txt", "one\ntwo\nthree\nfour\n")
    commit_all(repo, "base")
    write(repo, "a.txt", "one\nTWO\nthree\nfour\nfive\n")
    commit_all(repo, "edit")
    wide = git(repo, "diff", "--no-color", "-U3", "--no-ext-diff", "HEAD~1", "HEAD")
    assert added_lines(wide) == {"a.txt": [(2, "TWO"), (5, "five")]}


def test_malformed_hunks_are_refused() -> None:
    with pytest.raises(InvalidInput, match="hunk header"):
        added_lines("diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ nonsense @@\n+x\n")
    with pytest.raises(InvalidInput, match="not part of its hunk"):
        added_lines("diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -0,0 +1,2 @@\n+x\ndiff --git a/y b/y\n")


def test_scanning_is_safe_from_many_threads() -> None:
    files = {
        "config/a.py": [(3, f'KEY = "{FAKE_KEY_ID}"')],
        "app/auth.py": list(enumerate(CLEAN_CODE.splitlines(), start=1)),
    }
    expected = [SecretFinding("config/a.py", 3, "AWS Access Key")]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: scan_added_lines(files), range(32)))
    assert all(result == expected for result in results)


def test_an_allowlist_pragma_is_honoured_on_the_added_line() -> None:
    files = {"config/a.py": [(7, f'KEY = "{FAKE_KEY_ID}"  # pragma: allowlist secret')]}
    assert scan_added_lines(files) == []


def test_line_numbers_must_be_positive() -> None:
    with pytest.raises(InvalidInput, match="line numbers start at 1"):
        scan_added_lines({"a.py": [(0, "x")]})


def test_importing_the_module_does_not_load_the_detector() -> None:
    code = "import sys, planegate.tools.gates.secrets; print('detect_secrets' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "False"
