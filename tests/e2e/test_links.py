"""vigo never follows a link in its own trees, end to end: real engine, compose, git, sops, age.
A container with the ordinary `./data:/data` mount plants links; the next run fails that stack
naming the link, touches nothing outside, and applies the other stacks. vigo runs under umask
077 as the systemd unit does (UMask=0077)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Host
from tests.support import light
from tests.support.poll import wait_for

KEEP = '["sh", "-c", "trap \'exit 0\' TERM; while sleep 1; do :; done"]'


def vigo077(host: Host, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    """`vigo apply` under umask 077, like the unit."""
    res = subprocess.run([sys.executable, "-m", "vigo", "--config", str(host.config), "apply",
                          *args], capture_output=True, text=True, timeout=300, check=False,
                         stdin=subprocess.DEVNULL, preexec_fn=lambda: os.umask(0o077))
    out = res.stdout + res.stderr
    assert res.returncode == expect, f"exit {res.returncode}, expected {expect}\n{out}"
    assert "Traceback" not in out, out
    return res


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        body = path.read_bytes().hex() if stat.S_ISREG(st.st_mode) else ""
        out[path.relative_to(root).as_posix()] = (st.st_mode, body)
    return out


def wait_for_link(path: Path, timeout: float = 60) -> None:
    wait_for(path.is_symlink, timeout, 0.2, f"the container to plant {path}")


def planter(plants: dict[str, Path], volumes: str = "") -> str:
    """A stack whose container replaces data/<name> by a link to a host path."""
    script = "; ".join(f"rm -rf /data/{n}; ln -s {t} /data/{n}" for n, t in plants.items())
    return (f"services:\n  web:\n    image: {light.IMAGE}:{light.TAG}\n"
            f"    command: [\"sh\", \"-c\", \"{script}; trap 'exit 0' TERM; "
            "while sleep 1; do :; done\"]\n"
            f"    volumes:\n      - ./data:/data\n{volumes}")


def test_planted_links_fail_their_stack_and_touch_nothing_outside(host: Host,
                                                                  tmp_path: Path) -> None:
    outside, outside2 = tmp_path / "outside", tmp_path / "outside2"
    for folder in (outside, outside2):
        folder.mkdir()
        (folder / "old").write_text("the host's own file\n")
        (folder / "authorized_keys").write_text("ssh-ed25519 the-host's-own-key\n")
    light.add(host, "alpha")
    host.repo.write("stacks/planter/docker-compose.yml",
                    planter({"x": outside, "g": host.checkout / ".git"}))
    host.repo.write("stacks/planter/data/x/authorized_keys", "ssh-ed25519 from-the-repo\n")
    host.repo.write("stacks/planter/data/x/old", "rendered once\n")
    host.repo.write("stacks/planter/data/g/keep", "x\n")
    host.repo.write("stacks/binder/docker-compose.yml", planter({"y": outside2}))
    host.repo.write("stacks/binder/data/seed", "x\n")
    host.repo.commit("stacks with writable data mounts")
    vigo077(host)
    for link in ("planter/data/x", "planter/data/g", "binder/data/y"):
        wait_for_link(host.runtime / "stacks" / link)
    before = {p: snapshot(p) for p in (outside, outside2)}

    # The next commit changes the files under the planted links, drops one, and mounts one.
    host.repo.write("stacks/planter/data/x/authorized_keys", "ssh-ed25519 attacker\n")
    host.repo.remove("stacks/planter/data/x/old")
    host.repo.write("stacks/planter/data/g/config",
                    '[core]\n\tfsmonitor = "touch /tmp/vigo-links-pwned"\n')
    host.repo.write("stacks/binder/docker-compose.yml",
                    planter({"y": outside2}, "      - ./data/y:/y:ro\n"))
    light.add(host, "alpha", extra="    environment:\n      CHANGED: '1'\n")
    host.repo.commit("write through the links")
    res = vigo077(host, expect=1)
    out = res.stdout
    x, y = host.runtime / "stacks/planter/data/x", host.runtime / "stacks/binder/data/y"
    [line] = [s for s in out.splitlines() if s.startswith("planter: ")]
    assert f"{x} is a symbolic link (to {outside})" in line or (
        f"{host.runtime}/stacks/planter/data/g is a symbolic link" in line), out
    [line] = [s for s in out.splitlines() if s.startswith("binder: ")]
    assert f"mount source {y} crosses the symbolic link {y}" in line, out
    assert "alpha: updated" in out, out
    assert {p: snapshot(p) for p in before} == before
    assert not Path("/tmp/vigo-links-pwned").exists()
    assert "fsmonitor" not in (host.checkout / ".git/config").read_text()
    assert not (host.checkout / ".git/keep").exists()
    [web] = [c for c in host.containers("alpha")]
    assert "CHANGED=1" in web["Config"]["Env"]

    # Once the links are gone the stacks converge.
    for link in (x, host.runtime / "stacks/planter/data/g", y):
        link.unlink()
    host.repo.write("stacks/planter/docker-compose.yml", light.compose("planter"))
    host.repo.write_env("env/planter.env", {"A": "1"})
    host.repo.write("stacks/binder/docker-compose.yml", light.compose("binder"))
    host.repo.write_env("env/binder.env", {"A": "1"})
    host.repo.commit("plain stacks")
    vigo077(host)
    assert (x / "authorized_keys").read_text() == "ssh-ed25519 attacker\n"
    assert {p: snapshot(p) for p in before} == before


def test_planted_fsmonitor_in_the_checkout_never_runs(host: Host, tmp_path: Path) -> None:
    mark = tmp_path / "pwned"
    light.seed(host, "alpha")
    vigo077(host)
    config = host.checkout / ".git" / "config"
    with open(config, "a") as f:
        f.write(f'[core]\n\tfsmonitor = "touch {mark}"\n'
                f'[include]\n\tpath = {tmp_path}/more.config\n')
    (tmp_path / "more.config").write_text(f'[core]\n\tpager = "touch {mark}.pager"\n')
    (host.checkout / ".git/info").mkdir(exist_ok=True)
    (host.checkout / ".git/info/attributes").write_text("* filter=evil\n")
    light.add(host, "alpha", extra="    environment:\n      CHANGED: '1'\n")
    host.repo.commit("a new commit")
    res = vigo077(host)
    assert "alpha: updated" in res.stdout
    assert not mark.exists() and not Path(f"{mark}.pager").exists()
    assert "touch" not in config.read_text() and "include" not in config.read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(host.checkout.stat().st_mode) == 0o700
    assert not (host.checkout / ".git/info/attributes").exists()


def test_acme_json_link_is_refused(host: Host, tmp_path: Path) -> None:
    target = tmp_path / "shadow"
    target.write_text("root:secret\n")
    target.chmod(0o640)
    host.seed({})
    acme = host.runtime / "proxy/acme/acme.json"
    acme.parent.mkdir(parents=True)
    acme.symlink_to(target)
    res = vigo077(host, expect=1)
    assert f"{acme} is a symbolic link (to {target})" in res.stdout, res.stdout
    assert target.read_text() == "root:secret\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert host.containers("proxy") == []


def test_runtime_readable_by_a_non_root_container_under_umask_077(host: Host) -> None:
    host.repo.write("stacks/reader/docker-compose.yml", (
        f"services:\n  web:\n    image: {light.IMAGE}:{light.TAG}\n    user: '65534:65534'\n"
        "    command: [\"sh\", \"-c\", \"cat /config/sub/app.conf || exit 7; "
        "trap 'exit 0' TERM; while sleep 1; do :; done\"]\n"
        "    volumes:\n      - ./config:/config:ro\n"))
    host.repo.write("stacks/reader/config/sub/app.conf", "setting = 1\n")
    host.repo.commit("a non-root reader")
    res = vigo077(host)
    assert "reader: created" in res.stdout, res.stdout
    [web] = host.containers("reader")
    assert web["State"]["Running"] and web["State"]["ExitCode"] == 0
    for rel in ("", "stacks", "stacks/reader", "stacks/reader/config",
                "stacks/reader/config/sub"):
        assert stat.S_IMODE((host.runtime / rel).stat().st_mode) == 0o755, rel
    assert stat.S_IMODE((host.runtime / "stacks/reader/config/sub/app.conf").stat().st_mode
                        ) == 0o644
    assert stat.S_IMODE(host.state.stat().st_mode) == 0o700


def test_allowed_host_path_that_is_a_link_is_refused(host: Host, tmp_path: Path) -> None:
    real, shared = tmp_path / "real", tmp_path / "shared"
    (real / "a").mkdir(parents=True)
    shared.symlink_to(real)
    with open(host.config, "a") as f:
        f.write(f'allow_host_paths = ["{shared}"]\n')
    light.add(host, "alpha")
    light.add(host, "mounter", extra=f"    volumes:\n      - {shared}/a:/a:ro\n")
    host.repo.commit("a bind from an allowed prefix that is a link")
    res = vigo077(host, expect=1)
    [line] = [s for s in res.stdout.splitlines() if s.startswith("mounter: ")]
    assert f"mount source {shared}/a crosses the symbolic link {shared}" in line, res.stdout
    assert "alpha: created" in res.stdout
    assert host.containers("mounter") == []
