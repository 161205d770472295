"""Bootstrap's private-repo steps: the settings they stand for, the host key pin (keyscan
answers recorded), the deploy key (the real ssh-keygen)."""

from __future__ import annotations

from pathlib import Path

from tests.support.recording import RecordingRunner
from vigo import config
from vigo.adapters.run import Runner
from vigo.host import install
from vigo.host.install import BootstrapOptions, settings_text

FP = "SHA256:" + "b" * 43
OTHER = "SHA256:" + "c" * 43
ED = "[git.example.org]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA"
RSA = "[git.example.org]:2222 ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ"


def Keyscan() -> RecordingRunner:
    """ssh-keyscan offers two keys; ssh-keygen -l prints their fingerprints."""
    return (RecordingRunner()
            .on("ssh-keyscan", stdout=f"# git.example.org:2222 SSH-2.0-OpenSSH_9.2\n{ED}\n{RSA}\n")
            .on("ssh-keygen", stdin_has="ssh-ed25519",
                stdout=f"256 {FP} [git.example.org]:2222 (ED25519)\n")
            .on("ssh-keygen", stdout=f"256 {OTHER} [git.example.org]:2222 (ED25519)\n"))


def _opts(tmp_path: Path, **kw) -> BootstrapOptions:
    return BootstrapOptions(repo="ssh://git@git.example.org:2222/ops/infra.git",
                            config=tmp_path / "etc/vigo.toml", **kw)


def _settings(tmp_path: Path, opts: BootstrapOptions) -> config.Settings:
    path = tmp_path / "vigo.toml"
    path.write_text(settings_text(install._values(opts, {})))
    return config.load(path, {})


def test_credential_options_become_settings(tmp_path: Path) -> None:
    opts = _opts(tmp_path, ssh_keygen=tmp_path / "etc/deploy_key", host_key_fingerprint=FP)
    assert opts.credential_values() == {"ssh_key": str(tmp_path / "etc/deploy_key"),
                                        "ssh_known_hosts": str(tmp_path / "etc/known_hosts")}
    s = _settings(tmp_path, opts)
    assert s.ssh_key == tmp_path / "etc/deploy_key"
    assert s.ssh_known_hosts == tmp_path / "etc/known_hosts"
    opts = _opts(tmp_path, ssh_key=Path("/k"), known_hosts=Path("/kh"),
                 git_token_file=Path("/t"))
    assert opts.credential_values() == {"ssh_key": "/k", "ssh_known_hosts": "/kh",
                                        "git_token_file": "/t"}
    assert _opts(tmp_path).credential_values() == {}


def test_host_key_step_keeps_only_the_matching_key(tmp_path: Path) -> None:
    said: list[str] = []
    opts = _opts(tmp_path, host_key_fingerprint=FP)
    runner = Keyscan()
    text = install._host_key_step(opts, _settings(tmp_path, opts), lambda _, t: said.append(t),
                                  runner)
    assert text == ED + "\n"
    assert runner.argvs[0] == ("ssh-keyscan", "-T", "10", "-p", "2222", "--",
                               "git.example.org")
    assert said[-1] == f"host key: git.example.org port 2222 offers {FP}: pinned"


def test_host_key_step_refuses_what_the_server_does_not_offer(tmp_path: Path) -> None:
    wrong = "SHA256:" + "d" * 43
    cases = [
        (_opts(tmp_path, host_key_fingerprint=wrong),
         f"host key: missing: git.example.org port 2222 offers ED25519 {FP}, RSA {OTHER}, "
         f"not {wrong}: nothing pinned; fix: check the fingerprint with the git server's admin"),
        (_opts(tmp_path, host_key_fingerprint="MD5:aa:bb"),
         "host key: missing: 'MD5:aa:bb' is not a SHA256:... fingerprint, or "
         "ssh://git@git.example.org:2222/ops/infra.git is not an ssh:// or user@host:path repo"),
        (BootstrapOptions(repo="https://git.example.org/ops/infra.git",
                          config=tmp_path / "vigo.toml", host_key_fingerprint=FP),
         f"host key: missing: {FP!r} is not a SHA256:... fingerprint, or "
         "https://git.example.org/ops/infra.git is not an ssh:// or user@host:path repo"),
        (_opts(tmp_path, known_hosts=tmp_path / "nope"),
         f"host key: missing: ssh_known_hosts {tmp_path / 'nope'} does not exist; fix: vigo "
         "bootstrap --host-key-fingerprint SHA256:... writes it, or copy the server's line "
         "there"),
    ]
    loose = tmp_path / "loose_known_hosts"
    loose.write_text(ED + "\n")
    loose.chmod(0o666)
    cases.append((_opts(tmp_path, known_hosts=loose),
                  f"host key: missing: ssh_known_hosts {loose} has mode 0666: group or others "
                  f"can change the pinned host key; fix: chown root:root {loose} && chmod 644 "
                  f"{loose}"))
    for opts, line in cases:
        said: list[str] = []
        settings = _settings(tmp_path, opts)
        assert install._host_key_step(opts, settings, lambda _, t, said=said: said.append(t),
                                      Keyscan()) is None
        assert said[-1] == line


def test_deploy_key_step_creates_once_and_prints_the_public_half(tmp_path: Path) -> None:
    key = tmp_path / "etc/vigo/deploy_key"
    opts = _opts(tmp_path, ssh_keygen=key)
    settings = _settings(tmp_path, opts)
    said: list[str] = []
    assert install._deploy_key_step(opts, settings, lambda _, t: said.append(t),
                                    Runner()) is True
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.parent.stat().st_mode & 0o777 == 0o700
    public = key.with_name("deploy_key.pub").read_text().strip()
    assert public.startswith("ssh-ed25519 ") and said[-1] == f"  {public}"
    assert "read-only deploy key" in said[-2]
    before = key.read_bytes()
    assert install._deploy_key_step(opts, settings, lambda _, t: said.append(t),
                                    Runner()) is False
    assert key.read_bytes() == before
    key.chmod(0o644)
    assert install._deploy_key_step(opts, settings, lambda _, t: said.append(t),
                                    Runner()) is None
    assert said[-1].startswith(f"deploy key: missing: ssh_key {key} has mode 0644")
