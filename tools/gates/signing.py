"""The SSH signing adapter: ``ssh-keygen -Y`` signatures, the mechanism git uses for SSH-signed tags.

There is no cryptography here: ssh-keygen signs, finds the principal of a signature in an
allowed-signers file and verifies; planegate only hands it files. A signing key is named the way
git names one in ``user.signingkey`` (with ``gpg.format = ssh``): a path to a private key, a path
to a public key whose private half is in ssh-agent, or a public key itself (``key::ssh-ed25519
AAAA…``, or git's older bare ``ssh-ed25519 AAAA…``), which ssh-agent must hold.

Data to sign is passed as a file, as git passes it: ssh-keygen asks for a key's passphrase on the
controlling terminal, and falls back to stdin when there is none, so stdin is left to the person
(or closed when nobody is there to answer).

Failures are translated to ``InvalidInput`` (the key or the signature the caller gave is
unusable) or ``ExecutionError`` (ssh-keygen itself is missing or hung), with the next step named.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExecutionError, InvalidInput

NAMESPACE = "planegate"
SSH_KEYGEN = "ssh-keygen"
VERIFY_TIMEOUT_S = 30.0
# Signing may wait for a passphrase or a touch of a security key.
SIGN_TIMEOUT_S = 300.0
PUBLIC_KEY_PREFIXES = ("ssh-", "sk-ssh-", "ecdsa-sha2-", "sk-ecdsa-sha2-")
SIGNATURE_HEADER = "-----BEGIN SSH SIGNATURE-----"
MAX_SIGNATURE = 20_000


@dataclass(frozen=True)
class SigningKey:
    """An SSH key to sign with, as git's ``user.signingkey`` or ``--key`` named it."""

    spec: str
    source: str
    path: Path | None = None
    literal: str | None = None
    # git's gpg.ssh.program (an ssh-keygen replacement such as a password manager's signer), if set.
    program: str | None = None

    def describe(self) -> str:
        shown = str(self.path) if self.path is not None else f"{(self.literal or '')[:40]}…"
        return f"{shown} (from {self.source})"


def _looks_public(text: str) -> bool:
    return text.startswith(PUBLIC_KEY_PREFIXES)


def ssh_keygen() -> str:
    """The ssh-keygen program.

    Raises:
        ExecutionError: it is not installed.
    """
    found = shutil.which(SSH_KEYGEN)
    if found is None:
        raise ExecutionError(
            "ssh-keygen is not installed; install OpenSSH's client (Debian: apt-get install openssh-client)"
        )
    return found


def key_from_spec(spec: str, source: str, program: str | None = None) -> SigningKey:
    """A signing key named as git's ``user.signingkey`` names one; ``program`` signs instead of ssh-keygen.

    Raises:
        InvalidInput: the value is empty, or names a file that does not exist.
    """
    value = spec.strip()
    if not value:
        raise InvalidInput(f"the signing key from {source} is empty; name a key file or a public key")
    if value.startswith("key::"):
        return SigningKey(spec=value, source=source, literal=value.removeprefix("key::").strip(), program=program)
    if _looks_public(value):
        return SigningKey(spec=value, source=source, literal=value, program=program)
    path = Path(value).expanduser()
    if not path.is_file():
        raise InvalidInput(
            f"signing key {value!r} (from {source}) is not a file; pass --key with your SSH key's path, "
            "or set git config user.signingkey"
        )
    return SigningKey(spec=value, source=source, path=path.resolve(), program=program)


def git_config(cwd: Path, name: str) -> str | None:
    """``git config --get name`` as seen from ``cwd`` (repository, then global config); None when unset."""
    try:
        done = subprocess.run(
            ["git", "config", "--get", name],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=VERIFY_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = done.stdout.strip()
    return value if done.returncode == 0 and value else None


def key_from_git(cwd: Path) -> SigningKey | None:
    """The SSH signing key git would use for signed tags here (``gpg.format = ssh``), or None.

    git's ``gpg.ssh.program`` is kept: whatever signs git's tags signs planegate's statement too.
    """
    if (git_config(cwd, "gpg.format") or "").lower() != "ssh":
        return None
    spec = git_config(cwd, "user.signingkey")
    if spec is None:
        return None
    return key_from_spec(spec, "git config user.signingkey", git_config(cwd, "gpg.ssh.program"))


def _keygen(args: list[str], *, stdin: bytes | None = None, timeout: float = VERIFY_TIMEOUT_S) -> tuple[int, str, str]:
    try:
        done = subprocess.run(
            [ssh_keygen(), *args],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise ExecutionError(f"ssh-keygen {' '.join(args[:2])} did not finish within {timeout:.0f} s") from exc
    return done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")


def public_key(key: SigningKey) -> str:
    """The public half of ``key`` (``type base64 [comment]``).

    Raises:
        InvalidInput: it cannot be read without the passphrase and there is no ``.pub`` beside it.
    """
    if key.literal is not None:
        return key.literal
    assert key.path is not None
    text = key.path.read_text(encoding="utf-8", errors="replace").strip()
    if _looks_public(text):
        return text.splitlines()[0].strip()
    beside = key.path.with_name(key.path.name + ".pub")
    if beside.is_file():
        return beside.read_text(encoding="utf-8", errors="replace").strip().splitlines()[0].strip()
    status, out, err = _keygen(["-y", "-P", "", "-f", str(key.path)])
    if status == 0 and _looks_public(out.strip()):
        return out.strip()
    raise InvalidInput(
        f"cannot read the public key of {key.describe()} ({err.strip()[:200] or 'it has a passphrase'}); "
        f"write it beside the key with `ssh-keygen -y -f {key.path} > {key.path}.pub`"
    )


def fingerprint(public: str) -> str:
    """``SHA256:…`` of a public key, as ssh-keygen prints it."""
    with tempfile.TemporaryDirectory(prefix="planegate-ssh-") as tmp:
        pub = Path(tmp) / "key.pub"
        pub.write_text(public + "\n", encoding="utf-8")
        status, out, err = _keygen(["-l", "-f", str(pub)])
    parts = out.split()
    if status != 0 or len(parts) < 2:
        raise InvalidInput(f"not an SSH public key: {public[:60]!r} ({err.strip()[:200]})")
    return parts[1]


def passphrase_free(key: SigningKey) -> bool:
    """True when ``key`` is a private key file anyone who can read it can sign with (no passphrase).

    A key held in ssh-agent, a security-key (``-sk``) handle, or a key with a passphrase: False.
    """
    if key.path is None:
        return False
    text = key.path.read_text(encoding="utf-8", errors="replace").strip()
    if _looks_public(text):
        return False
    try:
        if public_key(key).startswith(("sk-ssh-", "sk-ecdsa-")):
            return False
    except InvalidInput:
        return False
    status, _, _ = _keygen(["-y", "-P", "", "-f", str(key.path)])
    return status == 0


def sign(key: SigningKey, data: bytes, *, namespace: str = NAMESPACE, show_prompts: bool = False) -> str:
    """Sign ``data`` with ``key``; the armored SSH signature.

    ``show_prompts``: ssh-keygen talks to the terminal (passphrase, "confirm user presence");
    otherwise it gets no stdin, so a key that needs a passphrase fails instead of waiting.

    Raises:
        InvalidInput: ssh-keygen could not sign (wrong passphrase, key not in ssh-agent, …).
    """
    with tempfile.TemporaryDirectory(prefix="planegate-sign-") as tmp:
        message = Path(tmp) / "statement"
        message.write_bytes(data)
        program = shutil.which(str(Path(key.program).expanduser())) if key.program else ssh_keygen()
        if program is None:
            raise InvalidInput(f"git's gpg.ssh.program {key.program!r} is not an executable; fix it in git config")
        argv = [program, "-Y", "sign", "-n", namespace]
        if key.literal is not None:
            pub = Path(tmp) / "key.pub"
            pub.write_text(key.literal + "\n", encoding="utf-8")
            argv += ["-U", "-f", str(pub)]
        else:
            argv += ["-f", str(key.path)]
        argv.append(str(message))
        try:
            done = subprocess.run(
                argv,
                stdin=None if show_prompts else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=None if show_prompts else subprocess.PIPE,
                timeout=SIGN_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise InvalidInput(
                f"signing with {key.describe()} waited {SIGN_TIMEOUT_S:.0f} s for you; run it again"
            ) from exc
        signature = Path(str(message) + ".sig")
        if done.returncode != 0 or not signature.is_file():
            detail = "see ssh-keygen's message above" if show_prompts else (done.stderr or b"").decode(errors="replace")
            raise InvalidInput(
                f"ssh-keygen could not sign with {key.describe()} (exit {done.returncode}): {detail.strip()[:400]}. "
                "Check the key's path and passphrase, or load it with ssh-add"
            )
        return signature.read_text(encoding="utf-8")


def _signature_file(tmp: Path, signature: str) -> Path:
    if not signature.lstrip().startswith(SIGNATURE_HEADER) or len(signature) > MAX_SIGNATURE:
        raise InvalidInput("the signature is not an armored SSH signature (-----BEGIN SSH SIGNATURE-----)")
    path = tmp / "statement.sig"
    path.write_text(signature, encoding="utf-8")
    return path


def find_principals(allowed_signers: bytes, signature: str, *, namespace: str = NAMESPACE) -> list[str]:
    """The principals of ``allowed_signers`` whose key made ``signature`` (empty: none of them).

    Raises:
        InvalidInput: the signature is not an SSH signature.
    """
    with tempfile.TemporaryDirectory(prefix="planegate-verify-") as tmp:
        allowed = Path(tmp) / "allowed_signers"
        allowed.write_bytes(allowed_signers)
        sig = _signature_file(Path(tmp), signature)
        status, out, _ = _keygen(["-Y", "find-principals", "-s", str(sig), "-f", str(allowed), "-n", namespace])
    return [line.strip() for line in out.splitlines() if line.strip()] if status == 0 else []


def verify(allowed_signers: bytes, principal: str, signature: str, data: bytes, *, namespace: str = NAMESPACE) -> str:
    """Check that ``principal``'s key in ``allowed_signers`` signed ``data``; ssh-keygen's verdict line.

    Raises:
        InvalidInput: the signature does not verify, naming ssh-keygen's reason.
    """
    with tempfile.TemporaryDirectory(prefix="planegate-verify-") as tmp:
        allowed = Path(tmp) / "allowed_signers"
        allowed.write_bytes(allowed_signers)
        sig = _signature_file(Path(tmp), signature)
        args = ["-Y", "verify", "-f", str(allowed), "-I", principal, "-n", namespace, "-s", str(sig)]
        status, out, err = _keygen(args, stdin=data)
    if status != 0:
        reason = " ".join((err or out).split())[:300] or f"exit {status}"
        raise InvalidInput(f"the signature does not verify for {principal!r}: {reason}")
    return out.strip()


def agent_reachable() -> bool:
    """Whether this process can reach an ssh-agent (so a key loaded there signs without asking)."""
    sock = os.environ.get("SSH_AUTH_SOCK")
    return bool(sock) and Path(str(sock)).exists()
