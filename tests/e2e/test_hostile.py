"""Hostile repo content and secret hygiene, end to end: the real engine, compose, a git remote,
sops and age. Each refusal names its reason, fails only what it concerns, and copies nothing
outside the runtime tree; the next run converges. Light stacks (tests/support/light.py): no
proxy, so each apply takes seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Host
from tests.support import light
from tests.support.infra import GIT_ID, sh

SECRET = "Zx9-very-secret-Value-42"
MIB16 = 16 * 1024 * 1024


def lines(res: subprocess.CompletedProcess[str], start: str) -> list[str]:
    return [x for x in res.stdout.splitlines() if x.startswith(start)]


def no_traceback(res: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_age_key_readable_by_others_or_owned_by_another_user_is_refused(host: Host) -> None:
    light.seed(host, "alpha")
    key = host.key.path
    fix = f"fix: chown root:root {key} && chmod 600 {key}"
    key.chmod(0o644)
    res = host.apply(expect=2)
    no_traceback(res)
    assert lines(res, "settings: ") == [
        f"settings: the age key {key} has mode 0644: group or others can read or change it; "
        f"{fix}; nothing changed"]
    # before touching anything: no checkout, no runtime tree, no secrets, no container
    assert not host.checkout.exists() and not host.runtime.exists()
    assert not host.secrets.exists() and host.containers() == []
    assert host.vigo("plan").returncode == 2  # plan decrypts too
    key.chmod(0o600)
    host.apply()
    # Every run checks (one stat), the idle one too.
    key.chmod(0o640)
    res = host.apply(expect=2)
    assert f"has mode 0640: group or others can read or change it; {fix}" in res.stdout
    key.chmod(0o600)
    os.chown(key, 4242, 4242)
    res = host.apply(expect=2)
    assert f"the age key {key} is owned by uid 4242, not root" in res.stdout and fix in res.stdout
    os.chown(key, 0, 0)
    assert "nothing to do" in host.apply().stdout


def test_secret_echoed_by_compose_or_by_a_container_is_masked(host: Host) -> None:
    light.add(host, "alpha", secrets={"API_TOKEN": SECRET})
    # compose's own error message quotes the interpolated value
    light.add(host, "bad", extra="    cpus: ${API_TOKEN}\n", secrets={"API_TOKEN": SECRET})
    # a container that prints its secret, then fails its health gate
    light.add(host, "leaky", extra='    command: ["sh", "-c", "echo token=$$LEAK; exit 3"]\n',
              secrets={"LEAK": SECRET + "-leak"})
    host.repo.commit("leak it")
    res = host.vigo("apply", "-v")
    assert res.returncode == 1, res.stdout + res.stderr
    assert SECRET not in res.stdout + res.stderr
    [bad] = lines(res, "bad: ")
    assert bad.startswith("bad: failed (stacks/bad/docker-compose.yml is not valid: ")
    assert "services.web.cpus" in bad and 'parsing "***"' in bad
    [leaky] = lines(res, "leaky: ")
    assert "exited with code 3" in leaky and "token=***" in leaky
    assert "alpha: created" in res.stdout
    recorded = (host.state / "state.json").read_text()
    assert SECRET not in recorded and "token=***" in recorded
    res = host.vigo("apply", "--json")
    assert json.loads(res.stdout)["exit_code"] == 1
    assert SECRET not in res.stdout + res.stderr and 'parsing \\"***\\"' in res.stdout


def test_a_secret_equal_to_a_stack_name_is_masked_but_never_confuses_observation(
        host: Host) -> None:
    """Masking is for what vigo prints: docker's machine-readable output (ps, inspect, images,
    config --hash) is parsed as it is, or a database named like its stack (POSTGRES_DB=shop)
    would hide the containers' names from vigo and redeploy the stack on every run."""
    light.add(host, "shop", secrets={"POSTGRES_DB": "shop"})
    light.add(host, "other")
    host.repo.commit("a secret that is also a name")
    res = host.apply()
    assert lines(res, "***: created") and "shop" not in res.stdout  # masked where printed
    before = {c["Id"] for c in host.containers()}
    res = host.apply()
    assert lines(res, "") == [f"{host.repo.head()[:12]}: nothing to do, 2 stack(s) unchanged"]
    assert {c["Id"] for c in host.containers()} == before


def test_hostile_content_fails_only_what_it_concerns_and_copies_nothing_out(
        host: Host) -> None:
    light.seed(host, "alpha", "beta")
    host.apply()
    before = {c["Name"]: c["Id"] for c in host.containers()}
    work = host.repo.work
    # 1. a bind mount that climbs out of the tree, on a running stack
    host.repo.write("stacks/beta/docker-compose.yml",
                    light.compose("beta", extra="    volumes:\n      - ../../../../etc:/x:ro\n"))
    # 2. an env file that is a symlink to /etc/shadow
    light.add(host, "shadow")
    (work / "env/shadow.env").unlink()
    (work / "env/shadow.env").symlink_to("/etc/shadow")
    # 3. a huge file in a stack, and one outside any stack (zeros: git stores a few KiB)
    light.add(host, "bulky")
    for rel in ("stacks/bulky/blob.bin", "docs/huge.bin"):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        with open(work / rel, "wb") as f:
            f.truncate(MIB16 + 1)
    # 4. stack names compose would refuse or read another way
    odd = ("UPPER", "-x", "my app")
    for name in odd:
        host.repo.write(f"stacks/{name}/docker-compose.yml",
                        f"services:\n  web:\n    image: {light.IMAGE}:{light.TAG}\n")
    # 5. a file in the base tree where this host's overlay has a folder
    light.add(host, "clash")
    host.repo.write("stacks/clash/conf", "base\n")
    host.repo.write("hosts/testhost/stacks/clash/conf/app.ini", "overlay\n")
    light.add(host, "gamma")  # and one good new stack
    host.repo.commit("hostile content")
    res = host.vigo("apply", "-v")
    assert res.returncode == 1, res.stdout + res.stderr
    no_traceback(res)
    [beta] = lines(res, "beta: ")
    assert beta.startswith("beta: failed (policy [path-escape] stacks/beta/docker-compose.yml:")
    assert "bind mount source '../../../../etc' resolves outside the repo tree" in beta
    assert lines(res, "shadow: ") == [
        "shadow: failed (env/shadow.env is a symlink that points outside the repo)"]
    size = f"16.0 MiB ({MIB16 + 1} bytes), over the 16 MiB limit of a rendered file"
    assert lines(res, "bulky: ") == [f"bulky: failed (stacks/bulky/blob.bin is {size})"]
    assert lines(res, "warning: ") == [f"warning: docs/huge.bin is {size}: not copied"]
    for name in odd:
        assert lines(res, f"{name}: ") == [
            f"{name}: failed (stack name {name!r} is not a valid compose project name (use "
            "lowercase letters, digits, '-' and '_'))"]
    assert lines(res, "clash: ") == [
        "clash: failed (stacks/clash/conf is a file in the base tree and a folder in "
        "hosts/testhost/)"]
    assert lines(res, "gamma: ") == ["gamma: created (new stack)"]
    assert lines(res, "alpha: ") == []  # unchanged: not even a compose call
    # Odd names never reach compose; the good ones did.
    commands = [x for x in res.stderr.splitlines() if x.startswith("$ ") and "compose" in x]
    assert any("gamma" in c for c in commands)
    for c in commands:
        assert not any(n in c for n in ("UPPER", "upper", "stacks/-x", "my app", "shadow",
                                        "bulky", "clash"))
    # Nothing that was running is lost; beta runs on without the mount.
    after = {c["Name"]: c["Id"] for c in host.containers()}
    assert {n: i for n, i in after.items() if n in before} == before
    assert not [m for c in host.containers() for m in c["Mounts"] if m["Destination"] == "/x"]
    # Nothing copied outside the runtime tree, nothing hostile inside it.
    shadow = Path("/etc/shadow").read_bytes()
    for root in (host.runtime, host.secrets):
        for rel in files_under(root):
            assert (root / rel).read_bytes() != shadow, rel
            assert (root / rel).stat().st_size <= MIB16, rel
    assert sorted(p.name for p in (host.runtime / "stacks").iterdir()) == [
        "alpha", "beta", "gamma"]
    assert not (host.runtime / "docs").exists() and not (host.runtime / "env/shadow.env").exists()
    assert sorted(p.name for p in host.root.iterdir()) == sorted(
        ["age.txt", "infra", "vigo.toml", "state", "runtime", "checkout"])
    # The next run, with the hostile content gone, converges.
    for rel in ("stacks/bulky", "env/shadow.env", "stacks/shadow", "stacks/clash", "hosts",
                *(f"stacks/{n}" for n in odd)):
        host.repo.remove(rel)
    host.repo.write("stacks/beta/docker-compose.yml", light.compose("beta"))
    host.repo.commit("clean up")
    res = host.apply()
    assert lines(res, "warning: ") == [f"warning: docs/huge.bin is {size}: not copied"]
    assert "nothing to do" in host.apply().stdout


def test_odd_host_name_is_an_invalid_setting(host: Host) -> None:
    light.seed(host, "alpha")
    host.config.write_text(host.config.read_text().replace('host = "testhost"',
                                                           'host = "../x"'))
    res = host.vigo("apply")
    assert res.returncode == 2 and "host '../x' is not a valid host name" in res.stderr
    no_traceback(res)
    host.config.write_text(host.config.read_text().replace('host = "../x"', 'host = "ok"'))
    env = {**os.environ, "VIGO_HOST": "a/../../b"}
    res = subprocess.run([sys.executable, "-m", "vigo", "--config", str(host.config), "apply"],
                         capture_output=True, text=True, env=env, check=False)
    assert res.returncode == 2 and "host 'a/../../b' is not a valid host name" in res.stderr
    assert not host.checkout.exists() and host.containers() == []


def test_gitmodules_are_never_followed(host: Host) -> None:
    light.add(host, "alpha")
    sub = host.root / "sub"
    sh("git", "init", "-q", "-b", "main", str(sub))
    (sub / "PAYLOAD.txt").write_text("from a submodule\n")
    sh("git", "-C", str(sub), "add", "-A")
    sh("git", *GIT_ID, "-C", str(sub), "commit", "-qm", "payload")
    sh("git", "-c", "protocol.file.allow=always", "-C", str(host.repo.work), "submodule", "add",
       "-q", str(sub), "stacks/alpha/vendor")
    host.repo.commit("a submodule")
    res = host.apply()
    assert lines(res, "warning: ") == [
        "warning: .gitmodules: submodules are never fetched; ignored"]
    assert "alpha: created" in res.stdout
    assert (host.checkout / "stacks/alpha/vendor").is_dir()  # the gitlink: an empty folder
    assert not list(host.checkout.rglob("PAYLOAD.txt"))
    assert not list(host.runtime.rglob("PAYLOAD.txt"))
    assert not (host.runtime / ".gitmodules").exists()
    assert json.loads((host.state / "state.json").read_text())["exit_code"] == 0
