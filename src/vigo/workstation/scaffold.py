"""`vigo init DIR`: a new infra repo in the design's layout that works as it is.

Templates live in vigo/templates/init/ with {{PLACEHOLDERS}}; env files are encrypted with sops
through a pipe before they are written, so no plaintext env file ever exists on disk.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from vigo.adapters.git import Git
from vigo.adapters.run import Runner
from vigo.adapters.sops import DecryptError, Sops
from vigo.core.records import record

DEFAULT_IMAGE = "ghcr.io/vigo-example/whoami:sha-1a2b3c4"
AGE_RECIPIENT = re.compile(r"^age1[0-9a-z]{58}$")


class InitError(Exception):
    pass


@record(frozen=True)
class Answers:
    recipient: str
    domain: str = "example.com"
    email: str = "ops@example.com"
    image: str = DEFAULT_IMAGE


def templates() -> dict[str, str]:
    """Every template file: repo-relative path -> text."""
    root = resources.files("vigo") / "templates" / "init"
    out: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, rel + "/")
            else:
                out[rel] = child.read_text()

    walk(root, "")
    return out


def render_files(answers: Answers) -> dict[str, str]:
    """Pure: the repo's files with the answers filled in (env files still in plaintext)."""
    values = {"RECIPIENT": answers.recipient, "DOMAIN": answers.domain,
              "EMAIL": answers.email, "IMAGE": answers.image}
    return {rel: re.sub(r"\{\{([A-Z]+)\}\}", lambda m: values[m.group(1)], text)
            for rel, text in templates().items()}


def recipient_of(key_file: Path) -> str:
    for line in key_file.read_text().splitlines():
        if line.startswith("# public key: "):
            return line.split(": ", 1)[1].strip()
    raise InitError(f"{key_file} has no '# public key:' line: is it an age identity file?")


def ensure_key(key_file: Path, target: Path, runner: Runner) -> tuple[str, str]:
    """The recipient of key_file, creating the identity (0600) when it does not exist; never
    overwrites one, never inside the repo. Returns (recipient, the line to print)."""
    path = key_file.resolve()
    if path.is_relative_to(target):
        raise InitError(f"{key_file} is inside {target}: keep the private key out of the repo")
    if path.exists():
        return recipient_of(path), f"{key_file}: exists, not overwritten; using its public key"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    res = runner.run(("age-keygen", "-o", str(path)), timeout=30)
    if not res.ok:
        raise InitError(f"age-keygen failed: {res.error(2)}")
    path.chmod(0o600)
    return recipient_of(path), (f"{key_file}: new age identity (mode 0600): put it on each "
                                "host at /root/.config/sops/age/keys.txt")


def init(target: Path, answers: Answers, runner: Runner, force: bool = False) -> list[str]:
    """Write the repo, encrypt its env files, `git init` and commit. Returns the lines to print."""
    if not AGE_RECIPIENT.match(answers.recipient):
        raise InitError(f"{answers.recipient!r} is not an age recipient (age1...)")
    if target.exists() and any(target.iterdir()) and not force:
        raise InitError(f"{target} is not empty: choose an empty folder, or --force to write "
                        "the scaffold into it (existing files with the same names are replaced)")
    files = render_files(answers)
    target.mkdir(parents=True, exist_ok=True)
    (target / ".sops.yaml").write_text(files.pop(".sops.yaml"))
    sops = Sops(runner)
    lines = []
    for rel, text in sorted(files.items()):
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.startswith("env/") and rel.endswith(".env"):
            try:
                text = sops.encrypt_dotenv(text, rel, target)
            except DecryptError as exc:
                raise InitError(str(exc)) from exc
            lines.append(f"{rel}: written, encrypted to {answers.recipient[:16]}...")
        path.write_text(text)
    git = Git(runner)
    try:
        rev = git.init_and_commit(target, "vigo init: proxy, whoami, encrypted env files")
    except Exception as exc:
        raise InitError(str(exc)) from exc
    lines.append(f"{target}: new infra repo, first commit {rev[:12]}")
    lines.append("next: set the remote (git remote add origin URL), push, then on each host "
                 "`vigo bootstrap --repo URL`")
    return lines
