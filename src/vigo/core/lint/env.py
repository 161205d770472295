"""Family env: env files are SOPS-encrypted and covered by .sops.yaml, registry credentials come in
complete groups, and a stack folder's `.env` is never silently ignored."""

import posixpath
import re
from collections.abc import Iterator
from pathlib import Path

from vigo.core import yamlsafe
from vigo.core.lint.base import (
    ERROR,
    WARNING,
    ComposeFile,
    Finding,
    describe,
    files_rule,
    repo_rule,
    who,
)
from vigo.core.lint.doc import as_mapping, dotenv_lines, each_service, item_line, path_entries
from vigo.core.model import COMPOSE_NAMES

IDS = describe({
    "env-encrypted": "env files are SOPS-encrypted, every value of them",
    "sops-coverage": ".sops.yaml exists and one of its creation rules matches every env file",
    "registries": "env/registries.env holds complete NAME_REGISTRY/_USERNAME/_PASSWORD groups",
    "stack-dotenv": "no .env in a stack folder (vigo never reads it for ${VAR}), unless a "
    "service names it in env_file; then it holds no secret-looking keys (warning)",
})


_SOPS_PARTIAL = (
    "sops_encrypted_regex",
    "sops_unencrypted_regex",
    "sops_encrypted_suffix",
    "sops_encrypted_comment_regex",
    "sops_unencrypted_comment_regex",
    "sops_mac_only_encrypted",
)


@repo_rule
def _env_encrypted(repo: Path) -> Iterator[Finding]:
    for rel in _env_files(repo):
        entries = list(dotenv_lines(repo / rel))
        meta = {key: value for _, key, value in entries if key.startswith("sops_")}
        variables = [(n, key, value) for n, key, value in entries if not key.startswith("sops_")]
        if not meta.get("sops_mac", "").startswith("ENC["):
            what = (
                f"{rel} is not SOPS-encrypted (no sops_mac=ENC[...] line); "
                f"{len(variables)} variable line(s) are committed in clear"
            )
            fix = f"Encrypt it with `sops -e -i {rel}` and rotate every value that was pushed."
            first = variables[0][0] if variables else None
            yield Finding("env-encrypted", ERROR, rel, first, what, fix)
            continue
        if any(key in meta for key in _SOPS_PARTIAL):
            continue  # partial encryption by config: sops itself enforces it
        suffix = meta.get("sops_unencrypted_suffix", "_unencrypted")
        for n, key, value in variables:
            if value and not value.startswith("ENC[") and not (suffix and key.endswith(suffix)):
                what = (
                    f"{rel} line {n}: a value is in clear inside a SOPS-encrypted file "
                    "(the file was edited without sops; its MAC no longer matches)"
                )
                fix = f"Edit the file only with `sops {rel}` and rotate the exposed value."
                yield Finding("env-encrypted", ERROR, rel, n, what, fix)


@repo_rule
def _sops_coverage(repo: Path) -> Iterator[Finding]:
    env_files = _env_files(repo)
    if not env_files:
        return
    patterns, problems = _creation_rules(repo)
    yield from problems
    if patterns is None:
        return
    for rel in env_files:
        if not any(p is None or p.search(rel) for p in patterns):
            what = (
                f"{rel} is matched by no creation_rules path_regex of .sops.yaml, "
                "so sops does not know which keys encrypt it"
            )
            fix = r"Add or widen a creation rule, e.g. `path_regex: (^|/)env/[^/]+\.env$`."
            yield Finding("sops-coverage", ERROR, rel, None, what, fix)


def _creation_rules(repo: Path) -> tuple[list[re.Pattern | None] | None, list[Finding]]:
    """Compiled path_regex of each creation rule (None: a rule without one matches every file,
    as in sops), or None with findings when .sops.yaml is missing or broken."""

    def problem(line: int | None, what: str) -> tuple[None, list[Finding]]:
        fix = "Add creation_rules with a path_regex matching env/*.env and the age recipients."
        return None, [Finding("sops-coverage", ERROR, ".sops.yaml", line, what, fix)]

    path = repo / ".sops.yaml"
    if not path.is_file():
        return problem(None, "there is no .sops.yaml at the repo root, so no env file is covered")
    try:
        doc = yamlsafe.load_bytes(path.read_bytes())
    except OSError:
        return problem(None, ".sops.yaml cannot be read")
    except yamlsafe.YamlRefused as exc:
        return problem(exc.line, f".sops.yaml cannot be parsed: it {exc.what}")
    rules = as_mapping(doc).get("creation_rules")
    if not isinstance(rules, list):
        return problem(1, ".sops.yaml has no creation_rules list")
    patterns: list[re.Pattern | None] = []
    findings: list[Finding] = []
    for i, rule in enumerate(rules):
        regex = as_mapping(rule).get("path_regex")
        if regex is None:
            patterns.append(None)
            continue
        try:
            patterns.append(re.compile(str(regex)))
        except re.error as exc:
            what = f"creation rule {i + 1} has an invalid path_regex: {exc}"
            fix = "Fix the regular expression (sops uses Go RE2 syntax)."
            findings.append(
                Finding("sops-coverage", ERROR, ".sops.yaml", item_line(rules, i), what, fix)
            )
    return patterns, findings


def _env_files(repo: Path) -> list[str]:
    """Repo-relative env/**/*.env and hosts/*/env/**/*.env (symlinks are left to `symlink`)."""
    folders = [repo / "env"]
    hosts = repo / "hosts"
    if hosts.is_dir():
        folders += [h / "env" for h in sorted(hosts.iterdir()) if h.is_dir() and not h.is_symlink()]
    return sorted(
        p.relative_to(repo).as_posix()
        for folder in folders
        if folder.is_dir() and not folder.is_symlink()
        for p in folder.rglob("*.env")
        if p.is_file() and not p.is_symlink()
    )


@repo_rule
def _registries(repo: Path) -> Iterator[Finding]:
    """The registry credentials file (docs/private-images.md): its names are in clear in the
    sops file, so the groups are checked without the key (encryption: env-encrypted)."""
    from vigo.core import registries

    for rel in _env_files(repo):
        if rel.rsplit("/", 2)[-2:] != registries.FILE.split("/"):
            continue
        entries = [(n, key) for n, key, _ in dotenv_lines(repo / rel)
                   if not key.startswith("sops_")]
        lines = {key: n for n, key in entries}
        for problem in registries.key_problems(key for _, key in entries):
            key = problem.split(":", 1)[0]
            yield Finding("registries", ERROR, rel, lines.get(key), problem,
                          "Edit it with `sops` so each registry has NAME_REGISTRY (host[:port]), "
                          "NAME_USERNAME and NAME_PASSWORD.")


# A key name that says it holds a secret: one of these words between underscores.
_SECRET_WORDS = frozenset({"PASSWORD", "PASSWD", "PASS", "PWD", "TOKEN", "SECRET", "KEY", "APIKEY",
                           "PRIVATE", "CREDENTIAL", "CREDENTIALS", "AUTH", "SALT", "DSN"})


@files_rule
def _stack_dotenv(root: Path, files: list[ComposeFile]) -> Iterator[Finding]:
    """A stack folder's `.env`. Compose reads it for ${VAR} defaults only when it is given no
    --env-file; vigo always gives the stack's env/ files, so such a file would be silently
    ignored: refused, with where its values belong. A service may still name it in
    `env_file:` (plaintext values for its environment): then secret-looking keys are
    reported (by line, never by name or value)."""
    for cf in files:
        if cf.fragment or posixpath.basename(cf.rel) not in COMPOSE_NAMES:
            continue
        rel = posixpath.join(cf.folder, ".env")
        if not (root / rel).is_file():
            continue
        named = any(
            posixpath.normpath(posixpath.join(other.folder, value)) == rel
            for other in files if other.stack == cf.stack
            for _, svc, _ in each_service(other.doc)
            for value, _ in path_entries(svc, "env_file")
        )
        own = "env/proxy.env" if cf.is_proxy else f"env/{cf.stack}.env"
        if not named:
            what = (
                f"{who(cf.stack)}: {rel} is never read: compose would take ${{VAR}} values "
                "from it, but vigo gives compose env/global.env and "
                f"{own} instead"
            )
            fix = (
                f"Move its values into {own} (sops-encrypted), and non-secret defaults into "
                f"{cf.rel} as ${{VAR:-default}}; then delete {rel}."
            )
            yield Finding("stack-dotenv", ERROR, rel, None, what, fix)
            continue
        lines = [
            n for n, key, _ in dotenv_lines(root / rel)
            if _SECRET_WORDS & set(key.upper().replace("-", "_").split("_"))
        ]
        if lines:
            what = (
                f"{who(cf.stack)}: {rel} is plaintext in the repo and a service reads it as "
                f"env_file, but line(s) {', '.join(map(str, lines))} look like secrets"
            )
            fix = f"Move secret values into {own} (sops-encrypted); keep {rel} for defaults."
            yield Finding("stack-dotenv", WARNING, rel, lines[0], what, fix)
