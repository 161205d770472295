"""`vigo promote`, `vigo history` and `vigo rollback` on a real git repo with real sops-encrypted
env files and a bare remote, as a person runs them in a clone on a workstation. No container is
started: the checks validate with `docker compose config` only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import TAG_A, TAG_B
from tests.support.infra import AgeKey, InfraRepo, app_compose, proxy_compose, sh

TAG_C = "sha-9c8b7a6"
WHOAMI = "stacks/whoami/docker-compose.yml"
IMAGE = "ghcr.io/vigo-example/whoami"


def commented(tag: str) -> str:
    """The whoami compose file with comments, quotes and odd spacing that must survive."""
    text = app_compose("t0-", "whoami", tag)
    text = text.replace(f"    image: {IMAGE}:{tag}\n",
                        f'    # the tag is promoted by `vigo promote`\n'
                        f'    image:   "{IMAGE}:{tag}"    # was {IMAGE}:{TAG_A}\n')
    text = text.replace("    labels:\n", "    labels:   # routed by Traefik\n")
    return "# whoami: the demo app\n" + text + "# end\n"


class Workstation:
    """A clone of the infra repo (with its bare remote) and a person's own git config."""

    def __init__(self, root: Path) -> None:
        key = AgeKey(root / "age.txt")
        self.repo = InfraRepo(root / "infra", [key.recipient])
        self.work = self.repo.work
        self.gitconfig = root / "gitconfig"
        self.gitconfig.write_text("[user]\n\tname = Pat Person\n\temail = pat@vigo.invalid\n"
                                  "[commit]\n\tgpgsign = false\n")
        self.repo.write("proxy/docker-compose.yml", proxy_compose("t0-"))
        self.repo.write_env("env/proxy.env", {"HTTP_PORT": "8080"})
        self.repo.write_env("env/global.env", {"TZ": "UTC"})
        self.repo.write(WHOAMI, commented(TAG_A))
        self.repo.write_env("env/whoami.env", {"WHOAMI_HOST": "whoami.example.test"})
        self.repo.commit("seed")
        sh("git", "-C", str(self.work), "branch", "-q", "--set-upstream-to", "origin/main")

    def vigo(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "VIGO_"))}
        env.update(VIGO_CONFIG=str(self.work / "no-settings.toml"),
                   GIT_CONFIG_GLOBAL=str(self.gitconfig))
        return subprocess.run([sys.executable, "-m", "vigo", *args], cwd=cwd or self.work,
                              env=env, capture_output=True, text=True, check=False, timeout=120,
                              stdin=subprocess.DEVNULL)

    def ok(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        res = self.vigo(*args)
        assert res.returncode == expect, (f"vigo {' '.join(args)} exited {res.returncode}, "
                                          f"expected {expect}\n{res.stdout}{res.stderr}")
        return res

    def git(self, *args: str) -> str:
        return sh("git", "-C", str(self.work), *args).stdout

    def read(self, rel: str = WHOAMI) -> bytes:
        return (self.work / rel).read_bytes()


@pytest.fixture
def ws(tmp_path: Path) -> Workstation:
    return Workstation(tmp_path)


def test_promote_commit_push_keeps_every_other_byte(ws: Workstation) -> None:
    before = ws.read()
    res = ws.ok("promote", "whoami", TAG_B, "--commit", "--push")
    assert res.stdout.startswith(f"whoami/web: {TAG_A} -> {TAG_B} ({WHOAMI}); committed ")
    assert res.stdout.rstrip().endswith("pushed to origin main")
    after = ws.read()
    assert after == before.replace(f'"{IMAGE}:{TAG_A}"'.encode(), f'"{IMAGE}:{TAG_B}"'.encode())
    assert after.count(TAG_A.encode()) == 1  # the comment that names the old tag is untouched
    assert b"# the tag is promoted by `vigo promote`\n" in after
    assert b"    labels:   # routed by Traefik\n" in after
    # One commit, of that file only, by the person (their global git config), pushed.
    subject, author, _, *body = ws.git("log", "-1", "--format=%s%n%an <%ae>%n%b").splitlines()
    assert subject == f"promote whoami/web: {TAG_A} -> {TAG_B}"
    assert author == "Pat Person <pat@vigo.invalid>"
    assert f"  from {IMAGE}:{TAG_A}" in body and f"  to   {IMAGE}:{TAG_B}" in body
    assert ws.git("show", "--format=", "--name-only", "HEAD").split() == [WHOAMI]
    assert ws.git("status", "--porcelain") == ""
    assert ws.git("rev-parse", "HEAD") == sh(
        "git", "-C", str(ws.repo.remote), "rev-parse", "main").stdout
    # The same tag again: nothing to do, nothing committed.
    head = ws.git("rev-parse", "HEAD")
    res = ws.ok("promote", "whoami/web", TAG_B, "--commit")
    assert res.stdout.strip() == f"whoami/web: already at {TAG_B} ({WHOAMI})"
    assert ws.git("rev-parse", "HEAD") == head


def test_promote_without_commit_and_by_digest(ws: Workstation) -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    head = ws.git("rev-parse", "HEAD")
    res = ws.ok("promote", "whoami/web", digest, "--json")
    out = json.loads(res.stdout)
    assert out["new_image"] == f"{IMAGE}@{digest}" and out["old_tag"] == TAG_A
    assert out["commit"] == "" and out["changed"] is True
    assert f'image:   "{IMAGE}@{digest}"    # was'.encode() in ws.read()
    assert ws.git("rev-parse", "HEAD") == head
    assert ws.git("status", "--porcelain").split() == ["M", WHOAMI]


def test_history_newest_first_and_rollback(ws: Workstation) -> None:
    ws.ok("promote", "whoami", TAG_B, "--commit")
    ws.repo.write("README.md", "unrelated\n")
    ws.repo.commit("docs")
    ws.ok("promote", "whoami", TAG_C, "--commit")
    res = ws.ok("history", "whoami")
    lines = res.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split()[:5] == ["TAG", "COMMIT", "DATE", "AUTHOR", "SUBJECT"]
    assert [line.split()[0] for line in lines[1:]] == [TAG_C, TAG_B, TAG_A]
    assert "seed" in lines[3]
    rows = json.loads(ws.ok("history", "whoami", "--service", "web", "--json").stdout)
    assert [r["tag"] for r in rows] == [TAG_C, TAG_B, TAG_A]
    assert rows[0]["subject"] == f"promote whoami/web: {TAG_B} -> {TAG_C}"
    assert rows[0]["author"] == "Pat Person" and len(rows[0]["date"]) == 10
    assert rows[0]["commit"] == ws.git("rev-parse", "HEAD").strip()

    # Back to the tag before the current one, committed.
    before = ws.read()
    res = ws.ok("rollback", "whoami", "--commit")
    assert res.stdout.startswith(f"whoami/web: {TAG_C} -> {TAG_B} ({WHOAMI}); committed ")
    assert ws.read() == before.replace(TAG_C.encode(), TAG_B.encode())
    assert ws.git("log", "-1", "--format=%s").strip() == (
        f"rollback whoami/web: {TAG_C} -> {TAG_B}")
    rows = json.loads(ws.ok("history", "whoami", "--json").stdout)
    assert [r["tag"] for r in rows] == [TAG_B, TAG_C, TAG_B, TAG_A]

    # A named tag; then an unpinned one is refused.
    ws.ok("rollback", "whoami/web", "--to", TAG_A, "--commit")
    assert f'"{IMAGE}:{TAG_A}"'.encode() in ws.read()
    res = ws.ok("rollback", "whoami", "--to", "latest", expect=2)
    assert "not pinned" in res.stderr


def test_rollback_with_nothing_to_go_back_to(ws: Workstation) -> None:
    res = ws.ok("rollback", "whoami", "--commit", expect=1)
    assert "nothing to roll back to" in res.stderr
    assert ws.git("log", "--format=%s").split() == ["seed"]


def test_unpinned_tag_refused_unless_allowed(ws: Workstation) -> None:
    before = ws.read()
    for tag in ("latest", "branch-main", "v1.2"):
        res = ws.ok("promote", "whoami", tag, "--commit", expect=2)
        assert "not pinned" in res.stderr and "--allow-unpinned" in res.stderr
        assert ws.read() == before
    res = ws.ok("promote", "whoami", "branch-main", "--allow-unpinned")
    assert res.stdout.strip() == f"whoami/web: {TAG_A} -> branch-main ({WHOAMI})"
    assert "allow_unpinned" in res.stderr  # hosts refuse it unless their settings allow it
    assert ws.read() == before.replace(f"{IMAGE}:{TAG_A}\"".encode(),
                                       f"{IMAGE}:branch-main\"".encode())


def test_promotion_failing_the_checks_is_undone(ws: Workstation) -> None:
    """An error of `vigo check` in the promoted file: refused, the file restored byte for byte,
    nothing committed."""
    text = ws.read().decode().replace("    env_file:\n", "    privileged: true\n    env_file:\n")
    ws.repo.write(WHOAMI, text)
    ws.repo.commit("oops")
    head = ws.git("rev-parse", "HEAD")
    res = ws.ok("promote", "whoami", TAG_B, "--commit", expect=1)
    assert f"{WHOAMI}:" in res.stdout and "[privileged]" in res.stdout
    assert "restored" in res.stderr
    assert ws.read() == text.encode()
    assert ws.git("rev-parse", "HEAD") == head and ws.git("status", "--porcelain") == ""


def test_compose_invalid_after_the_edit_is_undone(ws: Workstation) -> None:
    """`docker compose config` rejects the file (an unknown key): refused, file restored."""
    text = ws.read().decode().replace("    env_file:\n", "    not_a_compose_key: 1\n"
                                                      "    env_file:\n")
    ws.repo.write(WHOAMI, text)
    res = ws.ok("promote", "whoami", TAG_B, expect=1)
    assert "[compose-valid]" in res.stdout
    assert ws.read() == text.encode()


def test_refusals_name_what_is_wrong(ws: Workstation, tmp_path: Path) -> None:
    ws.repo.write("stacks/echo/compose.yaml",
                  "services:\n  echo:\n    image: ${ECHO_IMAGE}\n")
    ws.repo.write_env("env/echo.env", {"ECHO_IMAGE": f"{IMAGE}:{TAG_A}"})
    ws.repo.write("stacks/pair/compose.yaml",
                  f"services:\n  a:\n    image: {IMAGE}:{TAG_A}\n"
                  f"  b:\n    image: {IMAGE}:{TAG_A}\n")
    ws.repo.commit("more")
    res = ws.ok("promote", "echo", TAG_B, expect=2)
    assert "${ECHO_IMAGE}" in res.stderr and "env/echo.env" in res.stderr
    res = ws.ok("promote", "pair", TAG_B, expect=2)
    assert "a, b" in res.stderr and "pair/a" in res.stderr
    res = ws.ok("promote", "pair/c", TAG_B, expect=2)
    assert "no service 'c'" in res.stderr
    res = ws.ok("promote", "nope", TAG_B, expect=2)
    assert "no stack 'nope'" in res.stderr and "whoami" in res.stderr
    res = ws.ok("history", "whoami", "--service", "db", expect=2)
    assert "no service 'db'" in res.stderr
    # uncommitted changes in the file are never swept into a promotion commit
    ws.repo.write(WHOAMI, commented(TAG_A) + "# local edit\n")
    res = ws.ok("promote", "whoami", TAG_B, "--commit", expect=2)
    assert "uncommitted changes" in res.stderr
    # not a git repo
    plain = tmp_path / "plain"
    (plain / "stacks/whoami").mkdir(parents=True)
    (plain / WHOAMI).write_text(commented(TAG_A))
    res = ws.vigo("history", "whoami", "--repo", str(plain))
    assert res.returncode == 2, res.stderr
    res = ws.vigo("promote", "whoami", TAG_B, "--commit", "--repo", str(plain))
    assert res.returncode == 2 and "git" in res.stderr
    assert (plain / WHOAMI).read_text() == commented(TAG_A)


def test_host_overlay_and_proxy(ws: Workstation) -> None:
    overlay = f"hosts/edge1/{WHOAMI}"
    ws.repo.write(overlay, commented(TAG_A))
    ws.repo.commit("edge1 runs its own whoami")
    base = ws.read()
    res = ws.ok("promote", "whoami", TAG_B, "--host", "edge1", "--commit")
    assert res.stdout.startswith(f"whoami/web: {TAG_A} -> {TAG_B} ({overlay})")
    assert ws.read() == base
    assert ws.read(overlay) == base.replace(f"{IMAGE}:{TAG_A}\"".encode(),
                                            f"{IMAGE}:{TAG_B}\"".encode())
    assert ws.git("log", "-1", "--format=%s").strip() == (
        f"promote whoami/web on edge1: {TAG_A} -> {TAG_B}")
    rows = json.loads(ws.ok("history", "whoami", "--host", "edge1", "--json").stdout)
    assert [r["tag"] for r in rows] == [TAG_B, TAG_A]
    res = ws.ok("promote", "proxy", "sha-0a1b2c3")
    assert res.stdout.strip() == "proxy/traefik: v3.7 -> sha-0a1b2c3 (proxy/docker-compose.yml)"


def test_history_of_200_commits_is_fast(tmp_path: Path) -> None:
    """200 commits of one compose file, made with one `git fast-import`; history reads them
    with one git log and one git cat-file."""
    repo = tmp_path / "big"
    sh("git", "init", "-q", "-b", "main", str(repo))
    stream, when = [], 1_700_000_000
    for i in range(1, 201):
        body = (f"services:\n  app:\n    image: ghcr.io/o/app:sha-{i:07x}  # release {i}\n"
                f"  db:\n    image: postgres:16\n").encode()
        msg = f"release {i}".encode()
        stream += [b"commit refs/heads/main\n",
                   f"committer Rel Bot <bot@vigo.invalid> {when + i} +0000\n".encode(),
                   b"data %d\n%s\n" % (len(msg), msg),
                   b"M 100644 inline stacks/app/docker-compose.yml\n",
                   b"data %d\n%s\n" % (len(body), body)]
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet"], input=b"".join(stream),
                   check=True)
    sh("git", "-C", str(repo), "reset", "-q", "--hard")
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "vigo", "history", "app/app", "--repo",
                          str(repo)], capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 201 and lines[1].split()[:2] == ["sha-00000c8", lines[1].split()[1]]
    assert lines[-1].split()[0] == "sha-0000001"
    assert took < 3, f"vigo history of 200 commits took {took:.2f}s"
