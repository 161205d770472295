"""The argv and environment the git adapter builds for a private repo: tables, and the exact
calls of a fetch through a recording runner (no process is started)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.recording import Call, RecordingRunner
from vigo.adapters.git import (
    CREDENTIAL_HELPER,
    GIT,
    GIT_ENV,
    CredentialError,
    Git,
    GitAuth,
    HostKeyRefusal,
    SourceError,
    host_key_refusal,
    known_hosts_problem,
    read_token,
    refusal_line,
    remote_for,
    split_credentials,
    ssh_command,
    ssh_target,
)

TOKEN = "ghp_" + "x1y2z3" * 6


@pytest.mark.parametrize(("url", "expected"), [
    ("https://git.example.org/infra.git", ("https://git.example.org/infra.git", "", "")),
    ("https://u:tok%40x@git.example.org:8443/a/b.git",
     ("https://git.example.org:8443/a/b.git", "u", "tok@x")),
    ("https://deploy@git.example.org/r", ("https://git.example.org/r", "deploy", "")),
    ("http://:only-pass@h/r", ("http://h/r", "", "only-pass")),
    ("ssh://git@github.com/o/r.git", ("ssh://git@github.com/o/r.git", "", "")),
    ("ssh://git:pw@github.com/o/r.git", ("ssh://git@github.com/o/r.git", "", "pw")),
    ("git@github.com:o/r.git", ("git@github.com:o/r.git", "", "")),
    ("/srv/infra.git", ("/srv/infra.git", "", "")),
    ("https://u:p@h:notaport/r", ("https://u:p@h:notaport/r", "", "")),
])
def test_split_credentials(url: str, expected: tuple[str, str, str]) -> None:
    assert split_credentials(url) == expected


def test_ssh_command_pins_everything_and_quotes_paths() -> None:
    assert ssh_command(GitAuth()) == (
        "ssh -F /dev/null -o IdentityAgent=none -o BatchMode=yes "
        "-o StrictHostKeyChecking=yes -o UpdateHostKeys=no")
    cmd = ssh_command(GitAuth(Path("/etc/vigo/deploy key"), Path("/etc/vigo/kh%h")))
    assert cmd == ("ssh -F /dev/null -i '\"/etc/vigo/deploy key\"' -o IdentitiesOnly=yes "
                   "-o IdentityAgent=none -o BatchMode=yes -o StrictHostKeyChecking=yes "
                   "-o UpdateHostKeys=no -o UserKnownHostsFile=/etc/vigo/kh%%h "
                   "-o GlobalKnownHostsFile=/dev/null")
    with pytest.raises(CredentialError, match="double quote"):
        ssh_command(GitAuth(Path('/etc/vi"go')))
    with pytest.raises(CredentialError, match="newline"):
        ssh_command(GitAuth(None, Path("/etc/a\nb")))


def test_remote_for_https_token_only_in_the_environment() -> None:
    remote = remote_for("https://deploy@git.example.org/infra.git",
                        GitAuth(token_file=Path("/etc/vigo/token"),
                                ca_file=Path("/etc/vigo/ca.pem")), TOKEN)
    assert remote.url == "https://git.example.org/infra.git"
    assert remote.args == (
        "-c", f"credential.https://git.example.org.helper={CREDENTIAL_HELPER}",
        "-c", "http.sslCAInfo=/etc/vigo/ca.pem", "-c", "http.sslVerify=true")
    env = dict(remote.env)
    assert env["VIGO_GIT_USERNAME"] == "deploy" and env["VIGO_GIT_PASSWORD"] == TOKEN
    assert env["SSH_AUTH_SOCK"] == "" and env["GIT_SSH_COMMAND"].startswith("ssh -F /dev/null")
    assert TOKEN not in " ".join(remote.args) + remote.url
    assert remote.secrets == (TOKEN,)


def test_remote_for_embedded_token_is_stripped_and_masked() -> None:
    remote = remote_for(f"https://bot:{TOKEN}@git.example.org:8443/infra.git", GitAuth())
    assert remote.url == "https://git.example.org:8443/infra.git"
    assert remote.args == (
        "-c", f"credential.https://git.example.org:8443.helper={CREDENTIAL_HELPER}")
    assert dict(remote.env)["VIGO_GIT_PASSWORD"] == TOKEN
    assert dict(remote.env)["VIGO_GIT_USERNAME"] == "bot"
    assert set(remote.secrets) == {TOKEN, "bot"}
    # a token file wins over a token left in the URL
    remote = remote_for(f"https://{TOKEN}@h/r", GitAuth(token_file=Path("/t")), "file-token")
    assert dict(remote.env)["VIGO_GIT_PASSWORD"] == "file-token"
    assert TOKEN in remote.secrets  # masked, not sent
    remote = remote_for(f"https://{TOKEN}@h/r", GitAuth())  # GitHub's https://TOKEN@host
    assert dict(remote.env)["VIGO_GIT_PASSWORD"] == TOKEN
    assert dict(remote.env)["VIGO_GIT_USERNAME"] == "x-access-token"
    assert remote.secrets == (TOKEN,)


def test_remote_for_ssh_and_plain_urls_get_no_helper() -> None:
    for url in ("ssh://git@h/r.git", "git@h:r.git", "/srv/infra.git", "https://h/public.git"):
        remote = remote_for(url, GitAuth(Path("/k"), Path("/kh")))
        assert remote.args == () and remote.url == url and remote.secrets == ()
        assert "VIGO_GIT_PASSWORD" not in dict(remote.env)
        assert "-i /k " in dict(remote.env)["GIT_SSH_COMMAND"]


def test_credential_helper_holds_no_secret_and_answers_get_only(tmp_path: Path) -> None:
    import subprocess

    assert "VIGO_GIT_PASSWORD" in CREDENTIAL_HELPER and TOKEN not in CREDENTIAL_HELPER
    env = {"PATH": os.environ["PATH"], "VIGO_GIT_USERNAME": "u", "VIGO_GIT_PASSWORD": TOKEN}
    shell = CREDENTIAL_HELPER.removeprefix("!")
    for op, out in (("get", f"username=u\npassword={TOKEN}\n"), ("store", ""), ("erase", "")):
        res = subprocess.run(["sh", "-c", f"{shell} {op}"], env=env, capture_output=True,
                             text=True, check=False)
        assert res.stdout == out


@pytest.mark.parametrize(("url", "target"), [
    ("ssh://git@github.com/o/r.git", ("github.com", 22)),
    ("ssh://root@127.0.0.1:2222/srv/r.git", ("127.0.0.1", 2222)),
    ("ssh://[::1]:2222/r", ("::1", 2222)),
    ("git@github.com:o/r.git", ("github.com", 22)),
    ("github.com:o/r.git", ("github.com", 22)),
    ("https://github.com/o/r.git", None),
    ("/srv/infra.git", None),
    ("./infra", None),
])
def test_ssh_target(url: str, target: tuple[str, int] | None) -> None:
    assert ssh_target(url) == target


UNKNOWN = ("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict "
           "checking.\r\nHost key verification failed.\r\nfatal: Could not read from remote "
           "repository.\n")
CHANGED = """@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that a host key has just been changed.
The fingerprint for the ED25519 key sent by the remote host is
SHA256:3Dn8ZcGkqTqk0U7v9Ljn1b6rQhJ1y2oJ0Y4nq5wRk2M.
Please contact your system administrator.
Add correct host key in /etc/vigo/known_hosts to get rid of this message.
Offending ED25519 key in /etc/vigo/known_hosts:1
Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.
Host key verification failed.
fatal: Could not read from remote repository.
"""


def test_host_key_refusal_parses_ssh() -> None:
    assert host_key_refusal(UNKNOWN) == HostKeyRefusal("unknown", "ED25519", "[127.0.0.1]:2222")
    assert host_key_refusal(CHANGED) == HostKeyRefusal(
        "changed", "ED25519", "[127.0.0.1]:2222",
        "SHA256:3Dn8ZcGkqTqk0U7v9Ljn1b6rQhJ1y2oJ0Y4nq5wRk2M")
    assert host_key_refusal("Permission denied (publickey).\nfatal: Could not read") is None


def test_refusal_line_names_fingerprint_file_and_fix() -> None:
    fp = "SHA256:3Dn8ZcGkqTqk0U7v9Ljn1b6rQhJ1y2oJ0Y4nq5wRk2M"
    line = refusal_line(host_key_refusal(UNKNOWN), fp, "127.0.0.1", 2222,
                        Path("/etc/vigo/known_hosts"))
    assert line.startswith("the SSH host key of [127.0.0.1]:2222 is not in /etc/vigo/known_hosts:"
                           f" the server offers ED25519 key {fp}; refused.")
    assert f"--host-key-fingerprint {fp}" in line and "ssh-keyscan -p 2222 127.0.0.1" in line
    line = refusal_line(host_key_refusal(CHANGED), fp, "127.0.0.1", 2222, None)
    assert "CHANGED" in line and "~/.ssh/known_hosts (set ssh_known_hosts)" in line
    assert "\n" not in line
    odd = HostKeyRefusal("unknown", "", "")  # ssh said only "Host key verification failed"
    assert "the server offers key SHA256:" in refusal_line(odd, fp, "h", 22, None)
    assert "of h is not in" in refusal_line(odd, fp, "h", 22, None)
    assert "the server offers a key it did not show" in refusal_line(odd, "", "h", 22, None)


def _git_init(call: Call) -> None:  # the folder git init makes; vigo writes its config
    Path(call.argv[call.argv.index("-C") + 1], ".git").mkdir(parents=True)


def Recording() -> RecordingRunner:
    return RecordingRunner().on("init", "-q", effect=_git_init).on("rev-parse",
                                                                   stdout="0123abcd\n")


def test_fetch_of_a_new_checkout_exact_argv_and_env(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    runner = Recording()
    git = Git(runner, 30, GitAuth(token_file=token))
    checkout = tmp_path / "checkout"
    url = "https://deploy@git.example.org/infra.git"
    assert git.fetch(url, "main", checkout) == "0123abcd"
    bare = "https://git.example.org/infra.git"
    helper = ("-c", f"credential.https://git.example.org.helper={CREDENTIAL_HELPER}")
    c = ("-C", str(checkout))
    assert runner.argvs == [
        (*GIT, *c, "init", "-q"),
        (*GIT, *helper, *c, "fetch", "-q", "--no-tags", "--no-recurse-submodules", "--prune",
         "--no-auto-maintenance", "--no-write-fetch-head", "origin",
         "+refs/heads/main:refs/remotes/origin/main"),
        (*GIT, *c, "rev-parse", "--verify", "-q", "refs/remotes/origin/main^{commit}"),
    ]
    runner.assert_not_in_argv(TOKEN)
    for call in runner.calls:
        assert {k: call.env[k] for k in GIT_ENV} == GIT_ENV
    assert f'url = "{bare}"' in (checkout / ".git" / "config").read_text()
    fetch_env = runner.calls[1].env
    assert fetch_env["VIGO_GIT_PASSWORD"] == TOKEN and fetch_env["SSH_AUTH_SOCK"] == ""
    assert runner.masker(f"x {TOKEN} y") == "x *** y"


def test_token_file_checked_like_the_age_key(tmp_path: Path) -> None:
    token = tmp_path / "token"
    with pytest.raises(CredentialError, match="does not exist"):
        read_token(token)
    token.write_text("\n")
    token.chmod(0o644)
    with pytest.raises(CredentialError, match=f"git_token_file {token} has mode 0644"):
        read_token(token)
    token.chmod(0o600)
    with pytest.raises(CredentialError, match="is empty"):
        read_token(token)
    token.write_text(f" {TOKEN} \nsecond line\n")
    assert read_token(token) == TOKEN
    runner = Recording()
    with pytest.raises(CredentialError, match=r"ssh_key .* does not exist"):
        Git(runner, 30, GitAuth(ssh_key=tmp_path / "nokey")).fetch("ssh://h/r", "main",
                                                                   tmp_path / "c")
    assert runner.calls == []


def test_known_hosts_changed_only_by_root(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    assert "does not exist; fix: vigo bootstrap --host-key-fingerprint" in \
        known_hosts_problem(known)
    known.write_text("[h]:22 ssh-ed25519 AAAA\n")
    for mode in (0o644, 0o600, 0o444):
        known.chmod(mode)
        assert known_hosts_problem(known) == ""
    for mode in (0o664, 0o646, 0o666):
        known.chmod(mode)
        assert known_hosts_problem(known) == (
            f"ssh_known_hosts {known} has mode {mode:04o}: group or others can change the "
            f"pinned host key; fix: chown root:root {known} && chmod 644 {known}")
    runner = Recording()
    with pytest.raises(CredentialError, match="can change the pinned host key"):
        Git(runner, 30, GitAuth(ssh_known_hosts=known)).fetch("ssh://h/r", "main", tmp_path)
    assert runner.calls == []


REFUSED = ("root@127.0.0.1: Permission denied (publickey).\r\nfatal: Could not read from remote "
           "repository.\n\nPlease make sure you have the correct access rights\nand the "
           "repository exists.\n")


def Refusing() -> RecordingRunner:
    """The server refuses the key: every fetch and ls-remote fails as ssh makes git fail."""
    return (RecordingRunner().on("fetch", returncode=128, stderr=REFUSED)
            .on("ls-remote", returncode=128, stderr=REFUSED))


def test_a_refused_deploy_key_names_the_public_half_to_add(tmp_path: Path) -> None:
    key = tmp_path / "deploy_key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o600)
    (tmp_path / "c" / ".git").mkdir(parents=True)  # a checkout exists: only the fetch fails
    git = Git(Refusing(), 30, GitAuth(ssh_key=key))
    with pytest.raises(SourceError) as exc:
        git.fetch("ssh://root@127.0.0.1:2222/srv/infra.git", "main", tmp_path / "c")
    assert str(exc.value).endswith(
        "failed: the server refused the key (Permission denied (publickey)): add the public "
        f"half of {key} to the repo as a read-only deploy key")
    assert not isinstance(exc.value, CredentialError)  # the next run tries again
