"""The reconcile engine end to end: real engine, compose v2, git remote, sops and age."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.e2e.conftest import TAG_A, TAG_B, Host
from tests.support.images import ensure_app_image
from tests.support.infra import sh

TOKEN = "s3cr3t-Tok3n-$HOME-#not-a-comment-'quoted'-\"double\""


def env_of(container: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in container["Config"]["Env"])


def test_first_deploy_two_stacks_with_service_web_each_routed_by_env_host(host: Host) -> None:
    host.seed()
    res = host.apply()
    assert "proxy: created (new stack)" in res.stdout
    assert "whoami: created" in res.stdout and "echo: created" in res.stdout
    projects = {c["Config"]["Labels"]["com.docker.compose.project"]: c
                for c in host.containers()}
    assert set(projects) == {f"{host.prefix}proxy", f"{host.prefix}whoami", f"{host.prefix}echo"}
    assert projects[f"{host.prefix}whoami"]["Config"]["Labels"][
        "com.docker.compose.service"] == "web"
    # ${WHOAMI_HOST} came from the encrypted env file into the Traefik rule, and Traefik routes.
    assert f"revision={TAG_A}" in host.get("whoami", TAG_A)
    assert f"revision={TAG_B}" in host.get("echo", TAG_B)
    rule = projects[f"{host.prefix}whoami"]["Config"]["Labels"][
        f"traefik.http.routers.{host.prefix}whoami.rule"]
    assert rule == f"Host(`{host.hostname('whoami')}`)"
    # A second run changes nothing: no compose process, same containers.
    before = {c["Id"] for c in host.containers()}
    res = host.apply()
    assert "nothing to do" in res.stdout
    assert {c["Id"] for c in host.containers()} == before


def test_promotion_then_rollback_by_git_revert(host: Host) -> None:
    host.seed()
    host.apply()
    new_tag = "sha-0c0ffee"
    ensure_app_image(new_tag)
    compose = host.repo.work / "stacks/whoami/docker-compose.yml"
    compose.write_text(compose.read_text().replace(TAG_A, new_tag))
    promotion = host.repo.commit("promote whoami")
    plan = host.vigo("plan")
    assert plan.returncode == 0, plan.stderr
    assert f"whoami: update (image {TAG_A} -> {new_tag})" in plan.stdout
    assert "echo: unchanged" in plan.stdout
    echo_before = host.containers("echo")[0]["Id"]
    res = host.apply()
    assert f"whoami: updated (image {TAG_A} -> {new_tag})" in res.stdout
    assert "echo:" not in res.stdout
    assert host.containers("whoami")[0]["Config"]["Image"].endswith(new_tag)
    assert f"revision={new_tag}" in host.get("whoami", new_tag)
    assert host.containers("echo")[0]["Id"] == echo_before
    host.repo.revert(promotion)
    res = host.apply()
    assert f"whoami: updated (image {new_tag} -> {TAG_A})" in res.stdout
    assert f"revision={TAG_A}" in host.get("whoami", TAG_A)


def test_secret_change_reaches_container_byte_for_byte_and_never_leaks(host: Host) -> None:
    pem = "-----BEGIN KEY-----\nMIIB+abc/def==\n-----END KEY-----"
    host.seed(secrets={"API_TOKEN": TOKEN, "PEM": pem, "JSON": '{"a": [1, "$b"]}'})
    out = host.apply().stdout
    env = env_of(host.containers("whoami")[0])
    assert env["API_TOKEN"] == TOKEN
    assert env["PEM"] == pem
    assert env["JSON"] == '{"a": [1, "$b"]}'
    rotated = "r0tated-" + TOKEN
    host.repo.write_env("env/whoami.env", {"WHOAMI_HOST": host.hostname("whoami"),
                                           "API_TOKEN": rotated, "PEM": pem,
                                           "JSON": '{"a": [1, "$b"]}'})
    host.repo.commit("rotate token")
    plan = host.vigo("plan", "-v")
    res = host.apply("-v")
    assert "whoami: updated (secrets in env/whoami.env changed)" in res.stdout
    assert env_of(host.containers("whoami")[0])["API_TOKEN"] == rotated
    # No decrypted value in any output, the checkout, the runtime tree, the state.
    status = host.vigo("apply", "--json")
    texts = [out, res.stdout, res.stderr, plan.stdout, plan.stderr, status.stdout]
    for text in texts:
        assert TOKEN not in text and rotated not in text and "MIIB+abc" not in text
    for folder in (host.checkout, host.runtime, host.state):
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                assert b"r0tated-" not in data and b"MIIB+abc" not in data, path
    # Decrypted files only under `secrets`, readable by nobody else.
    for path in [host.secrets, *host.secrets.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, f"{path} has mode {oct(mode)}"
    assert sorted(p.name for p in (host.secrets / "env").iterdir()) == [
        "echo.env", "global.env", "proxy.env", "whoami.env"]


def test_host_overlay_for_one_stack_leaves_the_others(host: Host) -> None:
    host.seed()
    host.apply()
    echo_id = host.containers("echo")[0]["Id"]
    overlay_tag = "sha-0ver1a7"
    ensure_app_image(overlay_tag)
    host.repo.write("hosts/testhost/stacks/whoami/docker-compose.yml",
                    (host.repo.work / "stacks/whoami/docker-compose.yml").read_text()
                    .replace(TAG_A, overlay_tag))
    host.repo.write("hosts/otherhost/stacks/echo/docker-compose.yml", "broken: [")
    host.repo.commit("overlay for testhost")
    res = host.apply()
    assert f"whoami: updated (image {TAG_A} -> {overlay_tag})" in res.stdout
    assert f"revision={overlay_tag}" in host.get("whoami", overlay_tag)
    assert host.containers("echo")[0]["Id"] == echo_id
    assert (host.runtime / "stacks/echo/docker-compose.yml").is_file()
    assert (host.runtime / "proxy/docker-compose.yml").is_file()
    # Deleting the overlay file brings the base file back.
    host.repo.remove("hosts/testhost")
    host.repo.commit("drop overlay")
    res = host.apply()
    assert f"whoami: updated (image {overlay_tag} -> {TAG_A})" in res.stdout
    assert f"revision={TAG_A}" in host.get("whoami", TAG_A)


def test_removed_stack_is_pruned_unrelated_project_stays(host: Host) -> None:
    host.seed()
    host.apply()
    unrelated = host.root / "unrelated"
    unrelated.mkdir()
    (unrelated / "compose.yaml").write_text(
        f"services:\n  web:\n    image: ghcr.io/vigo-example/whoami:{TAG_A}\n")
    project = f"{host.prefix}unrelated"
    sh("docker", "compose", "-p", project, "-f", str(unrelated / "compose.yaml"), "up", "-d")
    try:
        host.repo.remove("stacks/echo")
        host.repo.remove("env/echo.env")
        host.repo.commit("retire echo")
        res = host.apply()
        assert "echo: removed (no longer in the repo)" in res.stdout
        assert host.containers("echo") == []
        assert not (host.secrets / "env/echo.env").exists()
        assert not (host.runtime / "stacks/echo").exists()
        assert host.containers("whoami")
        running = sh("docker", "ps", "-q", "--filter",
                     f"label=com.docker.compose.project={project}").stdout.split()
        assert len(running) == 1
        # Losing the state file does not make vigo touch what it did not deploy.
        (host.state / "state.json").unlink()
        host.apply()
        assert sh("docker", "ps", "-q", "--filter",
                  f"label=com.docker.compose.project={project}").stdout.split() == running
    finally:
        sh("docker", "compose", "-p", project, "down", check=False)


def test_empty_tree_refuses_to_prune(host: Host) -> None:
    host.seed()
    host.apply()
    host.repo.remove("stacks")
    host.repo.commit("oops: stacks deleted")
    res = host.apply(expect=1)
    assert "prune refused" in res.stdout
    assert len(host.containers("whoami")) == 1 and len(host.containers("echo")) == 1
    res = host.apply("--allow-empty")
    assert "whoami: removed" in res.stdout
    assert host.containers("whoami") == []


def test_acme_json_survives_runs(host: Host) -> None:
    host.seed()
    host.apply()
    acme = host.runtime / "proxy/acme/acme.json"
    assert stat.S_IMODE(acme.stat().st_mode) == 0o600
    acme.write_text('{"le": {"Account": "kept"}}')
    data = host.runtime / "stacks/whoami/data/db.txt"
    data.parent.mkdir(parents=True)
    data.write_text("host data")
    host.repo.write("README.md", "a change elsewhere\n")
    host.repo.commit("touch")
    host.apply()
    host.repo.write("proxy/README.md", "proxy notes\n")
    host.repo.commit("touch proxy")
    host.apply()
    assert acme.read_text() == '{"le": {"Account": "kept"}}'
    assert data.read_text() == "host data"


def test_fetch_failure_leaves_everything_running(host: Host) -> None:
    host.seed()
    host.apply()
    ids = {c["Id"] for c in host.containers()}
    moved = host.repo.remote.with_name("gone.git")
    host.repo.remote.rename(moved)
    res = host.apply(expect=3)
    assert "fetch of branch 'main'" in res.stdout and "nothing changed" in res.stdout
    assert {c["Id"] for c in host.containers() if c["State"]["Running"]} == ids
    moved.rename(host.repo.remote)
    host.apply()


def test_tampered_env_file_fails_only_its_stack(host: Host) -> None:
    host.seed()
    host.apply()
    whoami_id = host.containers("whoami")[0]["Id"]
    env = host.repo.work / "env/whoami.env"
    lines = env.read_text().splitlines()
    lines[0] = lines[0][:-20] + ("A" if lines[0][-20] != "A" else "B") + lines[0][-19:]
    env.write_text("\n".join(lines) + "\n")
    host.repo.write("stacks/echo/docker-compose.yml",
                    (host.repo.work / "stacks/echo/docker-compose.yml").read_text()
                    .replace(TAG_B, TAG_A))
    host.repo.commit("tampered whoami env + promote echo")
    res = host.apply(expect=1)
    assert "whoami: failed (env/whoami.env:" in res.stdout
    assert "echo: updated" in res.stdout
    assert host.containers("whoami")[0]["Id"] == whoami_id
    assert host.containers("whoami")[0]["State"]["Running"]
    state = json.loads((host.state / "state.json").read_text())
    assert state["stacks"]["whoami"]["outcome"] == "failed"
    assert state["exit_code"] == 1


def test_plaintext_env_file_is_never_applied(host: Host) -> None:
    host.seed()
    host.repo.write("env/echo.env", f"ECHO_HOST={host.hostname('echo')}\n")
    host.repo.commit("plaintext by mistake")
    res = host.apply(expect=1)
    assert "echo: failed" in res.stdout and "not encrypted with sops" in res.stdout
    assert "whoami: created" in res.stdout
    assert host.containers("echo") == []


def test_concurrent_run_exits_75(host: Host) -> None:
    host.seed()
    host.apply()
    import fcntl

    with open(host.state / "lock", "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        res = host.vigo("apply")
    assert res.returncode == 75
    assert "another vigo run" in res.stderr
    # Two real runs at once: one of them waits for nothing and says so.
    host.repo.write("stacks/whoami/docker-compose.yml",
                    (host.repo.work / "stacks/whoami/docker-compose.yml").read_text()
                    .replace(TAG_A, TAG_B))
    host.repo.commit("promote")
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(host.vigo("apply").returncode))
               for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert sorted(codes) == [0, 75]


def test_symlink_out_of_repo_fails_its_stack_only(host: Host) -> None:
    host.seed()
    os.symlink("/etc/shadow", host.repo.work / "stacks/whoami/shadow")
    host.repo.commit("escape")
    res = host.apply(expect=1)
    assert "whoami: failed (stacks/whoami/shadow is a symlink that points outside" in res.stdout
    assert "echo: created" in res.stdout
    assert not (host.runtime / "stacks/whoami").exists()


def test_plan_changes_nothing(host: Host) -> None:
    host.seed()
    res = host.vigo("plan")
    assert res.returncode == 0, res.stderr
    assert "whoami: create (new stack)" in res.stdout
    assert host.containers() == []
    assert not host.runtime.exists() and not host.secrets.exists()
    res = host.vigo("plan", "--json")
    plan = {a["stack"]: a["action"] for a in json.loads(res.stdout)["plan"]}
    assert plan == {"proxy": "create", "whoami": "create", "echo": "create"}


def test_fetch_failure_never_prints_the_credential(host: Host) -> None:
    host.config.write_text(host.config.read_text().replace(
        f'repo = "{host.repo.remote}"', 'repo = "http://deploy:tok3n-XYZ@127.0.0.1:9/infra.git"'))
    res = host.apply("-v", expect=3)
    assert "tok3n-XYZ" not in res.stdout + res.stderr
    assert "http://127.0.0.1:9/infra.git" in res.stdout  # taken out before git sees the URL


def test_invalid_settings_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "vigo.toml"
    bad.write_text('repo = "/nowhere"\nbranchh = "main"\n')
    res = subprocess.run([sys.executable, "-m", "vigo", "--config", str(bad), "apply"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 2 and "unknown key 'branchh'" in res.stderr


def test_secrets_folder_on_disk_is_refused(host: Host) -> None:
    host.seed()
    on_disk = host.root / "secrets-on-disk"
    host.config.write_text(host.config.read_text().replace(str(host.secrets), str(on_disk)))
    res = host.apply(expect=2)
    assert f"secrets folder {on_disk} is not on a tmpfs" in res.stdout
    assert host.containers() == [] and not on_disk.exists()
    host.config.write_text(host.config.read_text() + "secrets_on_disk = true\n")
    host.apply()
    assert stat.S_IMODE(on_disk.stat().st_mode) == 0o700
