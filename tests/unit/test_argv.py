"""The exact argv (and environment, stdin, masking) each adapter builds, through a recording
runner that starts nothing (tests/support/recording.py), as borgmatic asserts the exact borg
argv: a table per adapter. Secrets are asserted to be absent from every argv."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.recording import Call, RecordingRunner
from vigo.adapters import tools
from vigo.adapters.compose import COMPOSE_ENV, Compose
from vigo.adapters.git import CREDENTIAL_HELPER, GIT, GIT_ENV, Clone, Git, GitAuth, workstation_env
from vigo.adapters.run import UNTRUSTED_DATA_LIMIT
from vigo.adapters.sops import Sops
from vigo.adapters.systemd import Systemd
from vigo.host.source import fetch_branch

# -- git (host side) --------------------------------------------------------------------------

SSH_PLAIN = ("ssh -F /dev/null -o IdentityAgent=none -o BatchMode=yes "
             "-o StrictHostKeyChecking=yes -o UpdateHostKeys=no")
PASSWORD = "s3cret-pass-1234"
URL_TOKEN = "glpat-" + "a1b2c3" * 4  # a long user name without a password: a token
FILE_TOKEN = "ghp_" + "x1y2z3" * 6


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def _git_init(call: Call) -> None:
    """git init makes .git: the adapter then writes its own config there."""
    Path(call.argv[call.argv.index("-C") + 1], ".git").mkdir(parents=True, exist_ok=True)


def git_runner() -> RecordingRunner:
    return (RecordingRunner().on("init", "-q", effect=_git_init)
            .on("rev-parse", "--verify", stdout="0123abcd" * 5 + "\n"))


def _auth(tmp_path: Path, kind: str) -> GitAuth:
    if kind == "token":
        return GitAuth(token_file=private(tmp_path / "token", FILE_TOKEN + "\n"),
                       ca_file=tmp_path / "ca.pem")
    if kind == "ssh":
        return GitAuth(ssh_key=private(tmp_path / "id_ed25519", "KEY\n"),
                       ssh_known_hosts=private(tmp_path / "known_hosts", "h k\n", 0o644))
    return GitAuth()


FETCH_CASES = [
    # url, auth kind, the -c options before -C, the environment added, secrets
    pytest.param("https://git.example.org/infra.git", "", (), {}, (), id="https-public"),
    pytest.param(f"https://deploy:{PASSWORD}@git.example.org/infra.git", "",
                 ("-c", f"credential.https://git.example.org.helper={CREDENTIAL_HELPER}"),
                 {"VIGO_GIT_USERNAME": "deploy", "VIGO_GIT_PASSWORD": PASSWORD}, (PASSWORD,),
                 id="https-user-and-password-in-the-url"),
    pytest.param(f"https://{URL_TOKEN}@git.example.org:8443/infra.git", "",
                 ("-c", f"credential.https://git.example.org:8443.helper={CREDENTIAL_HELPER}"),
                 {"VIGO_GIT_USERNAME": "x-access-token", "VIGO_GIT_PASSWORD": URL_TOKEN},
                 (URL_TOKEN,), id="https-token-as-the-user"),
    pytest.param("https://git.example.org/infra.git", "token",
                 ("-c", f"credential.https://git.example.org.helper={CREDENTIAL_HELPER}",
                  "-c", "http.sslCAInfo={tmp}/ca.pem", "-c", "http.sslVerify=true"),
                 {"VIGO_GIT_USERNAME": "x-access-token", "VIGO_GIT_PASSWORD": FILE_TOKEN},
                 (FILE_TOKEN,), id="https-token-file-and-private-ca"),
    pytest.param("ssh://git@git.example.org:2222/infra.git", "ssh", (),
                 {"GIT_SSH_COMMAND": "ssh -F /dev/null -i {tmp}/id_ed25519 -o IdentitiesOnly=yes "
                  "-o IdentityAgent=none -o BatchMode=yes -o StrictHostKeyChecking=yes "
                  "-o UpdateHostKeys=no -o UserKnownHostsFile={tmp}/known_hosts "
                  "-o GlobalKnownHostsFile=/dev/null"}, (), id="ssh-deploy-key-pinned-host"),
    pytest.param(f"ssh://git:{PASSWORD}@git.example.org/infra.git", "", (), {}, (PASSWORD,),
                 id="ssh-password-dropped"),
]


@pytest.mark.parametrize(("url", "kind", "options", "env", "secrets"), FETCH_CASES)
def test_git_fetch_of_a_new_checkout(tmp_path: Path, url: str, kind: str,
                                     options: tuple[str, ...], env: dict[str, str],
                                     secrets: tuple[str, ...]) -> None:
    runner = git_runner()
    checkout = tmp_path / "checkout"
    assert Git(runner, 30, _auth(tmp_path, kind)).fetch(url, "main", checkout) == "0123abcd" * 5
    tmp = str(tmp_path)
    options = tuple(o.replace("{tmp}", tmp) for o in options)
    c = ("-C", str(checkout))
    assert runner.argvs == [
        (*GIT, *c, "init", "-q"),
        (*GIT, *options, *c, "fetch", "-q", "--no-tags", "--no-recurse-submodules", "--prune",
         "--no-auto-maintenance", "--no-write-fetch-head", "origin",
         "+refs/heads/main:refs/remotes/origin/main"),
        (*GIT, *c, "rev-parse", "--verify", "-q", "refs/remotes/origin/main^{commit}"),
    ]
    fetch = runner.calls[1]
    expected = {**GIT_ENV, "GIT_SSH_COMMAND": SSH_PLAIN, "GIT_SSH_VARIANT": "ssh",
                "SSH_AUTH_SOCK": "", **{k: v.replace("{tmp}", tmp) for k, v in env.items()}}
    assert fetch.env == expected
    assert runner.calls[0].env == GIT_ENV == runner.calls[2].env  # local calls: no credentials
    runner.assert_not_in_argv(*secrets)
    config = (checkout / ".git/config").read_text()
    assert not [s for s in secrets if s in config]
    assert all(runner.masker(f"a {s} b") == "a *** b" for s in secrets)


def test_git_fetch_of_another_branch_fetches_only_that_branch(tmp_path: Path) -> None:
    runner = git_runner()
    (tmp_path / "c/.git").mkdir(parents=True)
    Git(runner, 30).fetch("/srv/infra.git", "release-2", tmp_path / "c")
    assert runner.argvs[0][-2:] == ("origin",
                                    "+refs/heads/release-2:refs/remotes/origin/release-2")
    assert runner.argvs[1][-1] == "refs/remotes/origin/release-2^{commit}"
    assert "fetch = +refs/heads/release-2:refs/remotes/origin/release-2" in (
        tmp_path / "c/.git/config").read_text()


def test_git_broken_checkout_is_recloned_exact_argv(tmp_path: Path) -> None:
    """A fetch that fails while the remote answers (host/source.py decides): ls-remote, then
    a fresh clone beside the checkout (credentials only in the environment), then the fetch
    again."""
    token = private(tmp_path / "token", FILE_TOKEN + "\n")
    checkout = tmp_path / "checkout"
    fresh = tmp_path / ".checkout.fresh"
    runner = (git_runner()
              .on("fetch", returncode=128, stderr="fatal: bad object HEAD", times=1)
              .on("ls-remote", stdout="abc\trefs/heads/main\n")
              .on("clone", effect=lambda call: (Path(call.argv[-1]) / ".git").mkdir(
                  parents=True)))
    (checkout / ".git").mkdir(parents=True)
    fetch_branch(Git(runner, 30, GitAuth(token_file=token)), "https://git.example.org/i.git",
                 "main", checkout)  # the decision is host/source.py's; git builds the argv
    helper = ("-c", f"credential.https://git.example.org.helper={CREDENTIAL_HELPER}")
    c = ("-C", str(checkout))
    fetch = ("fetch", "-q", "--no-tags", "--no-recurse-submodules", "--prune",
             "--no-auto-maintenance", "--no-write-fetch-head", "origin",
             "+refs/heads/main:refs/remotes/origin/main")
    assert runner.argvs == [
        (*GIT, *helper, *c, *fetch),
        (*GIT, *helper, "ls-remote", "--heads", "https://git.example.org/i.git", "main"),
        (*GIT, *helper, "clone", "-q", "--no-checkout", "--no-recurse-submodules",
         "--single-branch", "--branch", "main", "--origin", "origin",
         "https://git.example.org/i.git", str(fresh)),
        (*GIT, *helper, *c, *fetch),
        (*GIT, *c, "rev-parse", "--verify", "-q", "refs/remotes/origin/main^{commit}"),
    ]
    assert runner.calls[1].cwd == str(tmp_path)
    for call in runner.calls[:4]:
        assert call.env["VIGO_GIT_PASSWORD"] == FILE_TOKEN
    runner.assert_not_in_argv(FILE_TOKEN)
    assert not fresh.exists() and (checkout / ".git/config").is_file()


def test_git_checkout_reset_and_clean(tmp_path: Path) -> None:
    runner = git_runner()
    checkout = tmp_path / "c"
    (checkout / ".git").mkdir(parents=True)
    commit = "89ab" * 10
    assert Git(runner, 30).checkout(checkout, commit) == commit
    c = ("-C", str(checkout))
    assert runner.argvs == [(*GIT, *c, "reset", "-q", "--hard", commit),
                            (*GIT, *c, "clean", "-ffdxq"),  # then fetch's housekeeping
                            (*GIT, *c, "maintenance", "run", "--auto", "--quiet")]
    assert [call.env for call in runner.calls] == [GIT_ENV, GIT_ENV, GIT_ENV]


@pytest.mark.parametrize(("method", "args", "tail"), [
    ("head", (), ("rev-parse", "HEAD")),
    ("read_ref", ("refs/vigo/accepted",),
     ("rev-parse", "--verify", "-q", "refs/vigo/accepted^{commit}")),
    ("update_ref", ("refs/vigo/accepted", "abc"), ("update-ref", "refs/vigo/accepted", "abc")),
    ("is_ancestor", ("old", "new"), ("merge-base", "--is-ancestor", "old", "new")),
])
def test_git_local_reads(tmp_path: Path, method: str, args: tuple[str, ...],
                         tail: tuple[str, ...]) -> None:
    runner = RecordingRunner()
    getattr(Git(runner, 30), method)(tmp_path, *args)
    assert runner.argvs == [(*GIT, "-C", str(tmp_path), *tail)]
    assert runner.calls[0].env == GIT_ENV


def test_git_signatures_run_under_the_pins(tmp_path: Path) -> None:
    runner = RecordingRunner().on("log", stdout="abc G\n")
    pins = (("-c", "gpg.ssh.allowedSignersFile=/etc/vigo/allowed_signers"),
            {"GNUPGHOME": "/dev/null"})
    assert Git(runner, 30).signatures(tmp_path, ("old..new",), pins) == "abc G\n"
    assert runner.argvs == [(*GIT, "-c", "gpg.ssh.allowedSignersFile=/etc/vigo/allowed_signers",
                             "-C", str(tmp_path), "log", "--format=%H %G?", "old..new", "--")]
    assert runner.calls[0].env == {**GIT_ENV, "GNUPGHOME": "/dev/null"}


def test_git_host_keys_scan_and_fingerprint() -> None:
    line = "[git.example.org]:2222 ssh-ed25519 AAAAC3Nza"
    runner = (RecordingRunner().on("ssh-keyscan", stdout=f"# comment\n{line}\n")
              .on("ssh-keygen", stdout="256 SHA256:abc [git.example.org]:2222 (ED25519)\n"))
    assert Git(runner, 30).host_keys("git.example.org", 2222, "ED25519") == [(line, "SHA256:abc")]
    assert runner.argvs == [
        ("ssh-keyscan", "-T", "10", "-p", "2222", "-t", "ed25519", "--", "git.example.org"),
        ("ssh-keygen", "-l", "-E", "sha256", "-f", "-"),
    ]
    assert runner.calls[1].stdin == line + "\n"


def test_git_init_and_commit_on_a_workstation_uses_the_users_git(tmp_path: Path) -> None:
    runner = RecordingRunner()
    Git(runner, 30).init_and_commit(tmp_path, "vigo init")
    c = ("-C", str(tmp_path))
    assert runner.argvs == [("git", *c, "init", "-q", "-b", "main"), ("git", *c, "add", "-A"),
                            ("git", *c, "commit", "-q", "-m", "vigo init"),
                            (*GIT, *c, "rev-parse", "HEAD")]


# -- git (a person's clone: promote, history, rollback) ----------------------------------------

WORK = ("git", "-c", "submodule.recurse=false", "-c", "protocol.ext.allow=never")


def test_clone_commit_and_push_act_as_the_user(tmp_path: Path) -> None:
    runner = RecordingRunner().on("rev-parse", "HEAD", stdout="fedc\n")
    clone = Clone(runner, tmp_path)
    assert clone.commit("stacks/app/docker-compose.yml", "promote app") == "fedc"
    clone.push("origin", "refs/heads/main")
    c = ("-C", str(tmp_path))
    assert runner.argvs == [
        (*WORK, *c, "add", "--", "stacks/app/docker-compose.yml"),
        (*WORK, *c, "commit", "-q", "-m", "promote app", "--only", "--",
         "stacks/app/docker-compose.yml"),
        (*GIT, *c, "rev-parse", "HEAD"),
        (*WORK, *c, "push", "-q", "origin", "HEAD:refs/heads/main"),
    ]
    for i in (0, 1, 3):
        assert runner.calls[i].env == workstation_env()
        assert runner.calls[i].env["GIT_TERMINAL_PROMPT"] == "0"
    assert runner.calls[2].env == GIT_ENV


def test_clone_reads_are_pinned(tmp_path: Path) -> None:
    runner = (RecordingRunner().on("symbolic-ref", stdout="main\n")
              .on("for-each-ref", stdout="origin\0refs/heads/main\n"))
    clone = Clone(runner, tmp_path)
    clone.log("stacks/app/docker-compose.yml")
    clone.blobs(["HEAD:a", "HEAD~1:a"])
    clone.dirty("stacks/app")
    assert clone.upstream() == ("main", "origin", "refs/heads/main")
    c = ("-C", str(tmp_path))
    assert runner.argvs == [
        (*GIT, *c, "-c", "core.quotePath=false", "log", "--follow", "--name-only",
         "--format=%x1e%H%x1f%h%x1f%an%x1f%as%x1f%s", "--", "stacks/app/docker-compose.yml"),
        (*GIT, *c, "rev-parse", "--show-prefix"),
        (*GIT, *c, "cat-file", "--batch"),
        (*GIT, *c, "status", "--porcelain", "--untracked-files=no", "--", "stacks/app"),
        (*GIT, *c, "symbolic-ref", "-q", "--short", "HEAD"),
        (*GIT, *c, "for-each-ref", "--format=%(upstream:remotename)%00%(upstream:remoteref)",
         "refs/heads/main"),
    ]
    assert runner.calls[2].stdin == "HEAD:a\nHEAD~1:a\n"
    assert {frozenset(call.env.items()) for call in runner.calls} == {frozenset(GIT_ENV.items())}


def test_clone_export_uses_a_temporary_index(tmp_path: Path) -> None:
    runner = RecordingRunner().on("--show-prefix", stdout="infra/\n")
    dest = tmp_path / "base"
    Clone(runner, tmp_path).export("v1", dest)
    c = ("-C", str(tmp_path))
    assert runner.argvs == [(*GIT, *c, "rev-parse", "--show-prefix"),
                            (*GIT, *c, "read-tree", "v1:infra/"),
                            (*GIT, *c, "checkout-index", "--all", f"--prefix={dest}/")]
    assert runner.calls[1].env == {**GIT_ENV, "GIT_INDEX_FILE": str(tmp_path / "base.index")}


# -- sops ------------------------------------------------------------------------------------

PLAIN = "DB_PASSWORD=correct-horse-battery\n"


def test_sops_decrypt_exact_argv_env_and_unmasked_output(tmp_path: Path) -> None:
    key = private(tmp_path / "age.txt", "AGE-SECRET-KEY-1\n")
    runner = RecordingRunner().on("--decrypt", stdout=PLAIN)
    runner.masker.add(["correct-horse-battery"])
    assert Sops(runner, 45).decrypt_dotenv(tmp_path / "env/app.env", key) == PLAIN
    (call,) = runner.calls
    assert call.argv == ("sops", "--decrypt", "--input-type", "dotenv", "--output-type",
                         "dotenv", str(tmp_path / "env/app.env"))
    assert call.env == {"SOPS_AGE_KEY_FILE": str(key), "SOPS_DISABLE_VERSION_CHECK": "1"}
    assert (call.mask_output, call.timeout, call.stdin) == (False, 45, None)


def test_sops_encrypt_takes_the_plaintext_on_stdin_only(tmp_path: Path) -> None:
    runner = RecordingRunner().on("--encrypt", stdout="DB_PASSWORD=ENC[...]\n")
    Sops(runner).encrypt_dotenv(PLAIN, "env/app.env", tmp_path)
    (call,) = runner.calls
    assert call.argv == ("sops", "--encrypt", "--input-type", "dotenv", "--output-type",
                         "dotenv", "--filename-override", "env/app.env", "/dev/stdin")
    assert (call.stdin, call.cwd, call.env) == (PLAIN, str(tmp_path),
                                                {"SOPS_DISABLE_VERSION_CHECK": "1"})
    runner.assert_not_in_argv("correct-horse-battery")


@pytest.mark.parametrize(("identity", "env"), [
    (None, {"SOPS_DISABLE_VERSION_CHECK": "1"}),
    (Path("/etc/vigo/age.txt"), {"SOPS_DISABLE_VERSION_CHECK": "1",
                                 "SOPS_AGE_KEY_FILE": "/etc/vigo/age.txt"}),
])
def test_sops_updatekeys(tmp_path: Path, identity: Path | None, env: dict[str, str]) -> None:
    runner = RecordingRunner().on("updatekeys", stderr="already up to date\n")
    assert Sops(runner).updatekeys("env/app.env", tmp_path, identity) is False
    assert runner.argvs == [("sops", "updatekeys", "--yes", "--input-type", "dotenv",
                             "env/app.env")]
    assert (runner.calls[0].env, runner.calls[0].cwd) == (env, str(tmp_path))


# -- docker compose and docker -----------------------------------------------------------------

P = "vigo-app"
FILES = [Path("/var/lib/vigo/runtime/stacks/app/docker-compose.yml"),
         Path("/var/lib/vigo/override/app.yml")]
ENVS = [Path("/run/vigo/env/global.env"), Path("/run/vigo/env/app.env")]
HEAD = ("docker", "compose", "--project-name", P,
        "--file", str(FILES[0]), "--file", str(FILES[1]),
        "--env-file", str(ENVS[0]), "--env-file", str(ENVS[1]))
DOCKER_CONFIG = Path("/etc/vigo/docker")
PULL_ENV = {**COMPOSE_ENV, "DOCKER_CONFIG": str(DOCKER_CONFIG)}

COMPOSE_CASES = [
    # call, argv, env, mask_output, limit_data
    pytest.param(lambda c: c.config(P, FILES, ENVS),
                 (*HEAD, "config", "--format", "json", "--no-env-resolution"),
                 COMPOSE_ENV, False, UNTRUSTED_DATA_LIMIT, id="config"),
    pytest.param(lambda c: c.config(P, FILES[:1], []),
                 ("docker", "compose", "--project-name", P, "--file", str(FILES[0]),
                  "--env-file", "/dev/null", "config", "--format", "json",
                  "--no-env-resolution"),
                 COMPOSE_ENV, False, UNTRUSTED_DATA_LIMIT, id="config-no-env-file-reads-none"),
    pytest.param(lambda c: c.validate(FILES[0]),
                 ("docker", "compose", "--project-name", "vigo-check", "--file", str(FILES[0]),
                  "--env-file", "/dev/null", "config", "--quiet", "--no-interpolate",
                  "--no-env-resolution"),
                 COMPOSE_ENV, True, UNTRUSTED_DATA_LIMIT, id="validate"),
    pytest.param(lambda c: c.resolved(P, FILES, ENVS), (*HEAD, "config", "--format", "json"),
                 COMPOSE_ENV, False, None, id="resolved-model"),
    pytest.param(lambda c: c.config_hashes(P, FILES, ENVS),
                 (*HEAD, "config", "--hash", "*"), COMPOSE_ENV, False, UNTRUSTED_DATA_LIMIT,
                 id="config-hash"),
    pytest.param(lambda c: c.up(P, FILES, ENVS),
                 (*HEAD, "up", "--detach", "--remove-orphans", "--quiet-pull"),
                 COMPOSE_ENV, True, None, id="up"),
    pytest.param(lambda c: c.up(P, FILES, ENVS, DOCKER_CONFIG, ("web", "worker")),
                 (*HEAD, "up", "--detach", "--remove-orphans", "--quiet-pull", "--no-deps",
                  "web", "worker"), PULL_ENV, True, None, id="up-services-no-deps"),
    pytest.param(lambda c: c.up_service(P, FILES, ENVS, "web", 2, DOCKER_CONFIG),
                 (*HEAD, "up", "--detach", "--no-deps", "--no-recreate", "--quiet-pull",
                  "--scale", "web=2", "web"), PULL_ENV, True, None, id="up-one-more-replica"),
    pytest.param(lambda c: c.run_job(P, FILES, ENVS, "migrate", 120),
                 (*HEAD, "--ansi", "never", "up", "--no-deps", "--quiet-pull",
                  "--no-log-prefix", "--exit-code-from", "migrate", "migrate"),
                 COMPOSE_ENV, True, None, id="job-exit-code-from"),
    pytest.param(lambda c: c.up_model(P, Path("/run/vigo/good/app.json"), DOCKER_CONFIG),
                 ("docker", "compose", "--project-name", P, "--file", "/run/vigo/good/app.json",
                  "--env-file", "/dev/null", "up", "--detach", "--remove-orphans",
                  "--quiet-pull"), PULL_ENV, True, None, id="rollback-to-saved-model"),
    pytest.param(lambda c: c.down(P),
                 ("docker", "compose", "--project-name", P, "down", "--remove-orphans"),
                 COMPOSE_ENV, True, None, id="down"),
    pytest.param(lambda c: c.pull("ghcr.io/org/app:sha-1234567", DOCKER_CONFIG),
                 ("docker", "pull", "--quiet", "ghcr.io/org/app:sha-1234567"), PULL_ENV, True,
                 None, id="pull-with-registry-credentials"),
    pytest.param(lambda c: c.pull("ghcr.io/org/app:sha-1234567"),
                 ("docker", "pull", "--quiet", "ghcr.io/org/app:sha-1234567"), COMPOSE_ENV, True,
                 None, id="pull"),
    pytest.param(lambda c: (setattr(c, "_socket", ""), c.inspect(["c1", "c2"])),  # the CLI
                 ("docker", "inspect", "--type", "container", "c1", "c2"), {}, False, None,
                 id="inspect"),
    pytest.param(lambda c: c.logs("c1", 5), ("docker", "logs", "--tail", "5", "c1"), {}, True,
                 None, id="logs"),
    pytest.param(lambda c: c.exec("c1", "touch", "/tmp/vigo-drain"),
                 ("docker", "exec", "c1", "touch", "/tmp/vigo-drain"), {}, True, None,
                 id="exec-drain"),
    pytest.param(lambda c: (setattr(c, "_socket", ""), c.local_images()),  # through the CLI
                 ("docker", "images", "--digests", "--format",
                  "{{.Repository}}:{{.Tag}} {{.Repository}}@{{.Digest}}"), {}, False, None,
                 id="images"),
    pytest.param(lambda c: c.remove_image("ghcr.io/org/app:old"),
                 ("docker", "image", "rm", "ghcr.io/org/app:old"), {}, True, None,
                 id="image-rm"),
    pytest.param(lambda c: c.engine_ok(),
                 ("docker", "version", "--format", "{{.Server.Version}}"), {}, True, None,
                 id="engine-version"),
]


@pytest.mark.parametrize(("call", "argv", "env", "masked", "limit"), COMPOSE_CASES)
def test_compose_argv(call, argv: tuple[str, ...], env: dict[str, str], masked: bool,
                      limit: int | None) -> None:
    runner = RecordingRunner().on("inspect", stdout="[]").on("--hash", stdout="web abc\n")
    call(Compose(runner, timeout=600))
    (got,) = runner.calls
    assert got.argv == argv
    assert got.env == env
    assert (got.mask_output, got.limit_data) == (masked, limit)


def test_compose_remove_stops_then_removes() -> None:
    runner = RecordingRunner()
    Compose(runner).remove("c1", stop_timeout=20)
    assert runner.argvs == [("docker", "stop", "--time", "20", "c1"), ("docker", "rm", "c1")]
    assert runner.calls[0].timeout == 50


def _http(body: str, code: str = "200 OK") -> str:
    return f"HTTP/1.0 {code}\r\nContent-Type: application/json\r\n\r\n{body}"


def test_compose_lists_through_dial_stdio_for_another_endpoint() -> None:
    row = ('[{"Id":"c1","Names":["/vigo-app-web-1"],"State":"running","Status":"Up 1 s",'
           '"Image":"x:1","Labels":{"io.vigo.stack":"app","io.vigo.instance":"vigo-",'
           '"com.docker.compose.project":"vigo-app","com.docker.compose.service":"web"}}]')
    runner = RecordingRunner().on("dial-stdio", stdout=_http(row))
    compose = Compose(runner)
    compose._socket = ""  # DOCKER_HOST=tcp:// or a context: the docker CLI connects
    (c,) = compose.containers(project="vigo-app", instance="vigo-")
    assert (c.id, c.name, c.stack, c.project, c.service) == ("c1", "vigo-app-web-1", "app",
                                                              "vigo-app", "web")
    (call,) = runner.calls
    assert call.argv == ("docker", "system", "dial-stdio")
    assert call.stdin is not None and call.stdin.startswith("GET /containers/json?all=1&filters=")
    assert call.stdin.endswith("\r\n\r\n") and " HTTP/1.0\r\n" in call.stdin
    assert call.mask_output is False  # parsed, never printed


def test_compose_engine_cpus_through_dial_stdio() -> None:
    runner = RecordingRunner().on("dial-stdio", stdout=_http('{"NCPU": 8}'))
    compose = Compose(runner)
    compose._socket = ""
    assert compose.engine_cpus() == 8
    assert runner.argvs == [("docker", "system", "dial-stdio")]
    assert (runner.calls[0].stdin or "").startswith("GET /info HTTP/1.0\r\n")


@pytest.mark.parametrize(("answer", "why"), [
    ({"stdout": _http('{"message":"page not found"}', "404 Not Found")},
     "answered 404 Not Found: page not found"),
    ({"returncode": 1, "stderr": "error during connect: ssh: connect to host h port 22: "
      "Connection refused\n"}, "does not answer at the docker CLI's endpoint (docker system "
     "dial-stdio): error during connect: ssh: connect to host h port 22: Connection refused"),
])
def test_dial_stdio_failures_are_one_line(answer: dict, why: str) -> None:
    from vigo.adapters.compose import DockerError

    compose = Compose(RecordingRunner().on("dial-stdio", **answer))
    compose._socket = ""
    with pytest.raises(DockerError) as err:
        compose.containers()
    assert why in str(err.value) and "\n" not in str(err.value)


def test_compose_secret_in_an_env_file_never_reaches_argv() -> None:
    """Values reach compose through --env-file paths only."""
    runner = RecordingRunner()
    compose = Compose(runner)
    compose.up(P, FILES, ENVS)
    compose.config(P, FILES, ENVS)
    runner.assert_not_in_argv("correct-horse-battery", "=")


# -- systemd ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("root", "now", "argv"), [
    (Path("/"), True, ("systemctl", "enable", "--now", "vigo.timer")),
    (Path("/"), False, ("systemctl", "enable", "vigo.timer")),
    (Path("/mnt/host"), True, ("systemctl", "--root=/mnt/host", "enable", "vigo.timer")),
])
def test_systemd_enable(root: Path, now: bool, argv: tuple[str, ...]) -> None:
    runner = RecordingRunner()
    assert Systemd(runner, root).enable("vigo.timer", now) == ""
    assert runner.argvs == [argv]


@pytest.mark.parametrize(("root", "argv"), [
    (Path("/"), ("systemctl", "is-enabled", "vigo.timer")),
    (Path("/mnt/host"), ("systemctl", "--root=/mnt/host", "is-enabled", "vigo.timer")),
])
def test_systemd_is_enabled(root: Path, argv: tuple[str, ...]) -> None:
    runner = RecordingRunner().on("is-enabled", stdout="enabled\n")
    assert Systemd(runner, root).is_enabled("vigo.timer") is True
    assert runner.argvs == [argv]


def test_systemd_reload_probe_and_verify() -> None:
    seen: dict[str, str] = {}

    def read_units(call: Call) -> None:  # the temp folder is gone after verify returns
        seen.update({os.path.basename(p): Path(p).read_text() for p in call.argv[2:]})

    runner = RecordingRunner().on("verify", effect=read_units)
    units = {"vigo.service": "[Service]\nType=oneshot\n", "vigo.timer": "[Timer]\n"}
    systemd = Systemd(runner)
    assert systemd.verify(units) == ""
    assert systemd.daemon_reload() == ""
    assert systemd.has_analyze() is True
    verify = runner.argvs[0]
    assert verify[:2] == ("systemd-analyze", "verify")
    assert [os.path.basename(p) for p in verify[2:]] == ["vigo.service", "vigo.timer"]
    assert len({os.path.dirname(p) for p in verify[2:]}) == 1
    assert seen == units
    assert runner.argvs[1:] == [("systemctl", "daemon-reload"), ("systemd-analyze", "--version")]


# -- the tool probes -------------------------------------------------------------------------

PROBES = [("docker", "version", "--format", "{{.Server.Version}}"),
          ("docker", "compose", "version", "--short"), ("sops", "--version"), ("git", "--version")]


@pytest.mark.parametrize(("answers", "expected"), [
    pytest.param({"--format": (0, "27.3.1\n"), "--short": (0, "v2.29.7\n"),
                  "sops": (0, "sops 3.9.1 (latest)\n"), "git": (0, "git version 2.39.5\n")},
                 [("docker", "engine 27.3.1", ""), ("compose", "2.29.7", ""),
                  ("sops", "3.9.1", ""), ("git", "2.39.5", "")], id="all-there"),
    pytest.param({"--format": (127, ""), "--short": (1, ""), "sops": (127, ""),
                  "git": (127, "")},
                 [("docker", "", "the docker command is not installed"),
                  ("compose", "", "docker compose (v2) is not installed"),
                  ("sops", "", "sops is not installed"), ("git", "", "git is not installed")],
                 id="none-there"),
    pytest.param({"--format": (1, ""), "--short": (0, "1.29.2\n"),
                  "sops": (0, "sops 3.9.1\n"), "git": (0, "git version 2.39.5\n")},
                 [("docker", "", "the engine does not answer: exit 1"),
                  ("compose", "", "compose 1.29.2 is not v2"),
                  ("sops", "3.9.1", ""), ("git", "2.39.5", "")], id="engine-down-compose-v1"),
])
def test_tool_probes(answers: dict[str, tuple[int, str]],
                     expected: list[tuple[str, str, str]]) -> None:
    runner = RecordingRunner()
    for word, (code, out) in answers.items():
        runner.on(word, returncode=code, stdout=out)
    found = tools.probe(runner)
    assert runner.argvs == PROBES
    assert runner.calls[2].env == {"SOPS_DISABLE_VERSION_CHECK": "1"}
    assert [(t.name, t.version, t.problem) for t in found] == expected
    assert all(bool(t.fix) == bool(t.problem) for t in found)
