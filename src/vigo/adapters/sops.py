"""sops: decrypt one dotenv file with the host's age identity. Plaintext is never logged."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vigo.adapters.run import Runner


class DecryptError(Exception):
    pass


def _reason(code: int, stderr: str) -> str:
    low = stderr.lower()
    if "metadata not found" in low or "sops metadata" in low:
        return "not encrypted with sops (plaintext is never applied): encrypt it with `sops -e -i`"
    if code == 51 or "mac mismatch" in low:
        return "MAC mismatch: the file was changed without sops (tampered?); re-encrypt it"
    if code == 128 or "no identity matched" in low or "failed to get the data key" in low:
        return ("no key could decrypt it: is this host's age key a recipient in .sops.yaml? "
                "(re-encrypt with `sops updatekeys`)")
    return f"sops exited {code}"


def key_problem(path: Path, missing: str = "") -> str:
    """Why the host's age identity must not be used ('' when it is fine, or absent: a stack
    that needs it then fails on its own; bootstrap passes the `missing` line it wants). It
    must be owned by root (or by the user vigo runs as) and readable or writable by nobody
    else: one stat. The one owner rule of the key: apply and bootstrap both call it."""
    return private_file_problem(path, "the age key", missing=missing)


def credential_problem(settings) -> str:
    """The git credential files of the settings, checked like the age key ('' when fine)."""
    for what, path in (("ssh_key", settings.ssh_key), ("git_token_file",
                                                         settings.git_token_file)):
        why = private_file_problem(path, what) if path is not None else ""
        if why:
            return why
    return ""


def private_file_problem(path: Path, what: str, missing: str | None = None) -> str:
    """The owner and mode check of every secret file the host reads (the age key, the SSH
    deploy key, the git token file): '' when it is a file owned by root (or by the user vigo
    runs as) that nobody else can read or change, else one line with the fix (`missing`: the
    line when it does not exist, '' when that is fine)."""
    return owned_file_problem(path, what, mask=0o077, mode=0o600,
                              missing=f"{what} {path} does not exist" if missing is None
                              else missing,
                              uid_risk=": that user can read every secret",
                              mode_risk="can read or change it")


def owned_file_problem(path: Path, what: str, *, mask: int, mode: int, missing: str,
                       uid_risk: str, mode_risk: str) -> str:
    """The one ownership rule of the files vigo trusts: a regular file owned by root (or by the
    user vigo runs as) with none of the `mask` bits; else one line with the fix (`missing`
    when it does not exist)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return missing
    except OSError as exc:
        return f"{what} {path} cannot be read ({exc.strerror})"
    fix = f"fix: chown root:root {path} && chmod {mode:o} {path}"
    if not stat.S_ISREG(st.st_mode):
        return f"{what} {path} is not a file"
    if st.st_uid not in (0, os.geteuid()):
        return f"{what} {path} is owned by uid {st.st_uid}, not root{uid_risk}; {fix}"
    if st.st_mode & mask:
        return (f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others "
                f"{mode_risk}; {fix}")
    return ""


class Sops:
    def __init__(self, runner: Runner, timeout: float = 60) -> None:
        self.runner = runner
        self.timeout = timeout

    def encrypt_dotenv(self, plaintext: str, rel: str, repo: Path) -> str:
        """Encrypt dotenv text for `rel` with the creation rule of repo/.sops.yaml. The plaintext
        goes through a pipe only: it never touches the disk."""
        res = self.runner.run(
            ("sops", "--encrypt", "--input-type", "dotenv", "--output-type", "dotenv",
             "--filename-override", rel, "/dev/stdin"),
            env={"SOPS_DISABLE_VERSION_CHECK": "1"}, cwd=repo, input=plaintext,
            timeout=self.timeout)
        if not res.ok:
            raise DecryptError(f"sops could not encrypt {rel}: {res.error(2)}")
        return res.stdout

    def decrypt_dotenv(self, path: Path, age_key_file: Path) -> str:
        if not age_key_file.is_file():
            raise DecryptError(f"the age key {age_key_file} does not exist "
                               "(set age_key_file, or install the host's key there)")
        res = self.runner.run(
            ("sops", "--decrypt", "--input-type", "dotenv", "--output-type", "dotenv", str(path)),
            env={"SOPS_AGE_KEY_FILE": str(age_key_file), "SOPS_DISABLE_VERSION_CHECK": "1"},
            timeout=self.timeout, mask_output=False)
        if res.returncode == 127:
            raise DecryptError("sops is not installed (see the README: scripts/install-deps)")
        if not res.ok:
            raise DecryptError(_reason(res.returncode, res.stderr))
        return res.stdout

    def updatekeys(self, rel: str, repo: Path, identity: Path | None = None) -> bool:
        """`sops updatekeys -y` of repo/rel: its data key re-encrypted to the recipients of the
        .sops.yaml rule that matches it now (values and data key unchanged). Needs an identity
        that can decrypt the file today, unless nothing changes. True when the file changed."""
        env = {"SOPS_DISABLE_VERSION_CHECK": "1"}
        if identity is not None:
            env["SOPS_AGE_KEY_FILE"] = str(identity)
        res = self.runner.run(("sops", "updatekeys", "--yes", "--input-type", "dotenv", rel),
                              env=env, cwd=repo, timeout=self.timeout)
        if res.returncode == 127:
            raise DecryptError("sops is not installed (see the README: scripts/install-deps)")
        if res.returncode == 128:
            raise DecryptError(f"the identity {identity or '(sops default)'} cannot decrypt it: "
                               "it must be one of the file's recipients today")
        if not res.ok:
            raise DecryptError(_reason(res.returncode, res.stderr))
        return "already up to date" not in res.stderr
