"""Private images from a real registry with a login (Debian docker-registry, htpasswd, TLS
from a local CA the engine trusts): credentials from the infra repo (sops) and from root's
`docker login`, pulls by tag and by digest, a refused credential failing only its stack."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import TAG_A, TAG_B, Host
from tests.support.images import APP_REPOSITORY, ensure_app_image
from tests.support.registry import CERTS_D, Registry

TAG_C = "sha-c0ffee1"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(tmp_path / "registry").start()
    yield reg
    reg.stop()


def run(host: Host, docker_config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """vigo with a chosen DOCKER_CONFIG: this machine's own root login never leaks in."""
    env = {**os.environ, "DOCKER_CONFIG": str(docker_config)}
    return subprocess.run([sys.executable, "-m", "vigo", "--config", str(host.config), *args],
                          capture_output=True, text=True, timeout=300, check=False, env=env,
                          stdin=subprocess.DEVNULL)


def use_image(host: Host, stack: str, image: str) -> None:
    path = host.repo.work / f"stacks/{stack}/docker-compose.yml"
    text = path.read_text()
    start = text.index("image: ") + len("image: ")
    path.write_text(text[:start] + image + text[text.index("\n", start):])


def credentials(host: Host, registry: Registry, password: str | None = None,
                rel: str = "env/registries.env") -> None:
    host.repo.write_env(rel, {"CI_REGISTRY": registry.host, "CI_USERNAME": registry.user,
                              "CI_PASSWORD": registry.password if password is None
                              else password})


def assert_no_secret(registry: Registry, *texts: str, extra: tuple[str, ...] = ()) -> None:
    for text in texts:
        for secret in (*registry.secrets(), *extra):
            assert secret not in text, f"a credential was printed: {text}"


def saved(host: Host) -> str:
    return "".join(p.read_text(errors="replace") for p in host.state.rglob("*") if p.is_file())


def web_id(host: Host, stack: str) -> str:
    return next(c["Id"] for c in host.containers(stack) if c["State"]["Running"])


def test_repo_credentials_pull_by_tag_and_by_digest(host: Host, registry: Registry,
                                                    tmp_path: Path) -> None:
    tag_ref, _ = registry.push(f"{APP_REPOSITORY}:{TAG_A}", f"vigo/whoami:{TAG_A}")
    _, digest_ref = registry.push(f"{APP_REPOSITORY}:{TAG_B}", f"vigo/echo:{TAG_B}")
    host.seed()
    use_image(host, "whoami", tag_ref)
    use_image(host, "echo", digest_ref)
    credentials(host, registry)
    host.repo.commit("private images")
    empty = tmp_path / "no-login"
    empty.mkdir()
    assert not registry.has_locally(tag_ref) and not registry.has_locally(digest_ref)

    check = run(host, empty, "check", str(host.repo.work))
    assert check.returncode == 0, check.stdout + check.stderr
    res = run(host, empty, "apply")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "whoami: created" in res.stdout and "echo: created" in res.stdout
    assert registry.has_locally(tag_ref) and registry.has_locally(digest_ref)
    assert f"revision={TAG_A}" in host.get("whoami", TAG_A, timeout=60)
    assert f"revision={TAG_B}" in host.get("echo", TAG_B, timeout=60)
    images = {c["Config"]["Labels"]["io.vigo.stack"]: c["Config"]["Image"]
              for c in host.containers()}
    assert images["whoami"] == tag_ref and images["echo"] == digest_ref
    # The credentials live on the secrets tmpfs only, 0600 in a 0700 folder.
    cfg = host.secrets / "docker" / "config.json"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert stat.S_IMODE(cfg.parent.stat().st_mode) == 0o700
    assert registry.host in json.loads(cfg.read_text())["auths"]
    assert_no_secret(registry, res.stdout, res.stderr, saved(host))
    # A digest-pinned stack is not pulled again: the next run is idle.
    again = run(host, empty, "apply")
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout


def test_host_docker_login_is_used_when_the_repo_has_none(host: Host, registry: Registry
                                                          ) -> None:
    _, digest_ref = registry.push(f"{APP_REPOSITORY}:{TAG_A}", f"vigo/host:{TAG_A}")
    host.seed({"whoami": TAG_A})
    use_image(host, "whoami", digest_ref)
    host.repo.commit("private image, host login")
    # registry.login_dir is a real `docker login` (root's ~/.docker on a real host), and its
    # current docker context is one of its own: the pulls' DOCKER_CONFIG must keep it
    login = registry.login_dir
    for args in (("create", "vigo-ctx", "--docker", "host=unix:///var/run/docker.sock"),
                 ("use", "vigo-ctx")):
        subprocess.run(["docker", "--config", str(login), "context", *args], check=True,
                       capture_output=True, timeout=30)
    res = run(host, login, "-v", "apply")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "whoami: created" in res.stdout
    assert registry.has_locally(digest_ref)
    assert_no_secret(registry, res.stdout, res.stderr, saved(host))
    linked = host.secrets / "docker" / "contexts"
    assert linked.is_symlink() and os.readlink(linked) == str(login / "contexts")


def test_refused_credential_fails_only_that_stack_and_prints_none(
        host: Host, registry: Registry, tmp_path: Path) -> None:
    ensure_app_image(TAG_C)
    old_ref, _ = registry.push(f"{APP_REPOSITORY}:{TAG_A}", f"vigo/whoami:{TAG_A}")
    new_ref, new_digest = registry.push(f"{APP_REPOSITORY}:{TAG_C}", f"vigo/whoami:{TAG_C}")
    empty = tmp_path / "no-login"
    empty.mkdir()
    host.seed()
    use_image(host, "whoami", old_ref)
    credentials(host, registry)
    host.repo.commit("private whoami")
    first = run(host, empty, "apply")
    assert first.returncode == 0, first.stdout + first.stderr
    running = web_id(host, "whoami")

    wrong = "Wr0ng-passw0rd-42"
    use_image(host, "whoami", new_ref)
    credentials(host, registry, password=wrong)
    echo = host.repo.work / "stacks/echo/docker-compose.yml"
    echo.write_text(echo.read_text().replace(TAG_B, TAG_C))  # a local image: still applied
    host.repo.commit("new whoami, wrong password")
    res = run(host, empty, "apply")
    assert res.returncode == 1, res.stdout + res.stderr
    line = next(x for x in res.stdout.splitlines() if x.startswith("whoami: "))
    assert "failed" in line and f"registry {registry.host}" in line and new_ref in line
    assert "env/registries.env was refused" in line and "the running containers" in line
    assert "echo: updated" in res.stdout
    assert web_id(host, "whoami") == running  # the running container stays
    assert f"revision={TAG_A}" in host.get("whoami", TAG_A, timeout=60)
    assert_no_secret(registry, res.stdout, res.stderr, saved(host), extra=(wrong,))

    # The engine does not trust the registry's CA: the line says where the CA goes.
    credentials(host, registry)
    host.repo.commit("right password")
    trusted = CERTS_D / registry.host / "ca.crt"
    trusted.rename(trusted.with_name("ca.crt.off"))
    try:
        res = run(host, empty, "apply")
    finally:
        trusted.with_name("ca.crt.off").rename(trusted)
    assert res.returncode == 1
    line = next(x for x in res.stdout.splitlines() if x.startswith("whoami: "))
    assert "x509" in line and f"/etc/docker/certs.d/{registry.host}/ca.crt" in line, line
    assert web_id(host, "whoami") == running

    # No credential at all (file removed, no host login), pinned by digest: the same line.
    host.repo.remove("env/registries.env")
    use_image(host, "whoami", new_digest)
    host.repo.commit("no credentials")
    res = run(host, empty, "apply")
    assert res.returncode == 1
    line = next(x for x in res.stdout.splitlines() if x.startswith("whoami: "))
    assert f"no credential for {registry.host}" in line and new_digest in line, line
    assert web_id(host, "whoami") == running
    assert not (host.secrets / "docker" / "config.json").exists()
    assert_no_secret(registry, res.stdout, res.stderr, saved(host), extra=(wrong,))

    # The right credential in the host overlay: applied.
    credentials(host, registry, rel="hosts/testhost/env/registries.env")
    host.repo.commit("overlay credentials")
    res = run(host, empty, "apply")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "whoami: updated" in res.stdout
    assert f"revision={TAG_C}" in host.get("whoami", TAG_C, timeout=60)


def test_check_refuses_an_incomplete_or_plaintext_registries_file(host: Host, tmp_path: Path
                                                                  ) -> None:
    host.seed({"whoami": TAG_A})
    host.repo.write_env("env/registries.env", {"GHCR_REGISTRY": "ghcr.io",
                                               "GHCR_USERNAME": "bot"})
    host.repo.write("hosts/testhost/env/registries.env",
                    "A_REGISTRY=r.io\nA_USERNAME=u\nA_PASSWORD=plain-text-pw\n")
    res = run(host, tmp_path, "check", str(host.repo.work))
    assert res.returncode != 0
    assert "env/registries.env" in res.stdout and "GHCR_PASSWORD missing" in res.stdout
    assert "[registries]" in res.stdout
    assert "hosts/testhost/env/registries.env" in res.stdout and "[env-encrypted]" in res.stdout
    assert "plain-text-pw" not in res.stdout + res.stderr
