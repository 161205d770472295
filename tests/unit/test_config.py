"""Table-driven tests of vigo.config.load: a settings file and VIGO_* variables in, Settings or a
ConfigError naming the key out."""

from pathlib import Path

import pytest

from vigo import config
from vigo.config import ConfigError, Settings, load

REPO = 'repo = "git@example.org:infra.git"\n'


@pytest.fixture(autouse=True)
def hostname(monkeypatch):
    monkeypatch.setattr(config.socket, "gethostname", lambda: "box-1")


def run(tmp_path: Path, toml: str | None, env: dict[str, str], named: bool) -> Settings:
    """load() with the file written at tmp_path/vigo.toml, named as an argument or through
    VIGO_CONFIG; toml None means the file does not exist."""
    path = tmp_path / "vigo.toml"
    if toml is not None:
        path.write_text(toml)
    if named:
        return load(path, env)
    return load(None, {"VIGO_CONFIG": str(path), **env})


@pytest.mark.parametrize("toml, env, named, expected", [
    pytest.param(None, {"VIGO_REPO": "/srv/infra.git"}, False,
                 Settings(repo="/srv/infra.git", host="box-1"), id="defaults"),
    pytest.param(REPO + 'branch = "prod"\ncheckout = "/opt/vigo"\ngit_timeout = 30\n'
                 'host = "web-1"\nproject_prefix = "t1-"\n', {}, True,
                 Settings(repo="git@example.org:infra.git", branch="prod",
                          checkout=Path("/opt/vigo"), git_timeout=30, host="web-1",
                          project_prefix="t1-"), id="file-keys"),
    pytest.param(REPO + 'branch = "prod"\ngit_timeout = 30\n', {}, False,
                 Settings(repo="git@example.org:infra.git", branch="prod", git_timeout=30,
                          host="box-1"), id="file-from-VIGO_CONFIG"),
    pytest.param(REPO + 'branch = "prod"\ngit_timeout = 30\n',
                 {"VIGO_BRANCH": "staging", "VIGO_GIT_TIMEOUT": "45", "VIGO_STATE": "/x/state",
                  "VIGO_HOST": "web-2", "VIGO_REPO": "/other.git"}, True,
                 Settings(repo="/other.git", branch="staging", git_timeout=45,
                          state=Path("/x/state"), host="web-2"), id="env-overrides-file"),
    pytest.param(REPO + 'allow_unpinned = ["dev"]\n', {"VIGO_ALLOW_CAPS": "NET_ADMIN, CHOWN,"},
                 True, Settings(repo="git@example.org:infra.git", host="box-1",
                                allow_unpinned=("dev",), allow_caps=("NET_ADMIN", "CHOWN")),
                 id="lists-from-file-and-comma-separated-env"),
])
def test_load(tmp_path, toml, env, named, expected):
    assert run(tmp_path, toml, env, named) == expected


@pytest.mark.parametrize("toml, env, named, message", [
    pytest.param(REPO + 'reop = "x"\n', {}, True, "{file}: unknown key 'reop'", id="unknown-key"),
    pytest.param(REPO + "branch = 3\n", {}, True, "{file}: branch must be a string, not int",
                 id="string-key-wrong-type"),
    pytest.param(REPO + 'git_timeout = "soon"\n', {}, True,
                 "{file}: git_timeout must be a positive whole number", id="int-key-wrong-type"),
    pytest.param(REPO + "git_timeout = true\n", {}, True,
                 "{file}: git_timeout must be a positive whole number", id="bool-is-no-int"),
    pytest.param(REPO, {"VIGO_COMPOSE_TIMEOUT": "-5"}, True,
                 "VIGO_COMPOSE_TIMEOUT: compose_timeout must be", id="env-int-negative"),
    pytest.param(REPO + 'allow_caps = ["CHOWN", 1]\n', {}, True,
                 "{file}: allow_caps must be a list of strings", id="list-key-wrong-type"),
    pytest.param(REPO + 'checkout = "srv/vigo"\n', {}, True,
                 "{file}: checkout must be an absolute path, got 'srv/vigo'", id="relative-path"),
    pytest.param(REPO, {"VIGO_STATE": "state"}, True,
                 "VIGO_STATE: state must be an absolute path", id="relative-path-from-env"),
    pytest.param('branch = "main"\n', {}, True, "{file}: repo is required", id="missing-repo"),
    pytest.param(None, {}, False, "{file}: repo is required", id="no-file-no-repo"),
    pytest.param(None, {"VIGO_REPO": "x"}, True, "{file}: settings file not found",
                 id="missing-named-file"),
    pytest.param("repo = \n", {}, True, "{file}: cannot read settings", id="invalid-toml"),
    pytest.param(REPO + 'host = "-web"\n', {}, True, "host '-web' is not a valid host name",
                 id="invalid-host"),
    pytest.param(REPO, {"VIGO_HOST": "web 1"}, True, "host 'web 1' is not a valid host name",
                 id="invalid-host-from-env"),
    pytest.param(REPO + 'project_prefix = "Prod"\n', {}, True, "project_prefix must be",
                 id="invalid-prefix"),
    pytest.param(REPO + 'branch = "--upload-pack=x"\n', {}, True, "branch must be a branch name",
                 id="branch-like-an-option"),
])
def test_load_errors(tmp_path, toml, env, named, message):
    with pytest.raises(ConfigError) as exc:
        run(tmp_path, toml, env, named)
    assert message.format(file=tmp_path / "vigo.toml") in str(exc.value)


@pytest.mark.parametrize("toml, env, message", [
    pytest.param(REPO + "git_timeout = 100000000000000000000\n", {},
                 "{file}: git_timeout must be a positive whole number up to 3600 (seconds), "
                 "got 100000000000000000000", id="git-timeout-huge"),
    pytest.param(REPO + "compose_timeout = 7201\n", {},
                 "{file}: compose_timeout must be a positive whole number up to 7200 (seconds)",
                 id="compose-timeout-over"),
    pytest.param(REPO + "health_timeout = 0\n", {},
                 "{file}: health_timeout must be a positive whole number up to 3600", id="zero"),
    pytest.param(REPO, {"VIGO_KEEP_IMAGES": "101"},
                 "VIGO_KEEP_IMAGES: keep_images must be a positive whole number up to 100 "
                 "(revisions), got 101", id="keep-images-from-env"),
    pytest.param(REPO + 'runtime = "/srv/vigo"\n', {},
                 "{file}: checkout and runtime are the same folder (/srv/vigo): each needs its "
                 "own", id="runtime-is-checkout"),
    pytest.param(REPO + 'runtime = "/srv/vigo/./"\n', {},
                 "checkout and runtime are the same folder", id="same-after-normalising"),
    pytest.param(REPO + 'runtime = "/srv/vigo/runtime"\n', {},
                 "{file}: runtime (/srv/vigo/runtime) is inside checkout (/srv/vigo): give each "
                 "its own folder, none inside another", id="runtime-in-checkout"),
    pytest.param(REPO + 'state = "/srv"\n', {},
                 "checkout (/srv/vigo) is inside state (/srv)", id="checkout-in-state"),
    pytest.param(REPO, {"VIGO_SECRETS": "/var/lib/vigo/secrets"},
                 "VIGO_SECRETS: secrets (/var/lib/vigo/secrets) is inside state (/var/lib/vigo)",
                 id="secrets-in-state-from-env"),
    pytest.param(REPO + 'age_key_file = "/srv/vigo/keys.txt"\n', {},
                 "age_key_file (/srv/vigo/keys.txt) is inside checkout (/srv/vigo)",
                 id="key-in-checkout"),
])
def test_bounds_and_own_folders(tmp_path, toml, env, message):
    with pytest.raises(ConfigError) as exc:
        run(tmp_path, toml, env, True)
    assert message.format(file=tmp_path / "vigo.toml") in str(exc.value)


def test_own_folders_compared_through_symlinks(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    toml = REPO + f'checkout = "{tmp_path / "real"}"\nruntime = "{tmp_path / "link" / "rt"}"\n'
    with pytest.raises(ConfigError, match=r"runtime \(.*/real/rt\) is inside checkout"):
        run(tmp_path, toml, {}, True)


def test_limits_are_accepted():
    assert load(None, {"VIGO_CONFIG": "/nonexistent", "VIGO_REPO": "x", "VIGO_GIT_TIMEOUT":
                       "3600", "VIGO_KEEP_IMAGES": "1"}).git_timeout == 3600


def test_a_settings_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "vigo.toml"
    path.write_bytes(REPO.encode() + b'branch = "caf\xe9"\n')
    with pytest.raises(ConfigError) as exc:
        load(path, {})
    assert str(exc.value) == (f"{path}: cannot read settings: not UTF-8 text (byte 0xe9 at "
                              "offset 48); save the file as UTF-8")


def test_the_cli_exits_2_naming_the_file(tmp_path, capsys):
    from vigo.cli import commands as cli

    path = tmp_path / "vigo.toml"
    path.write_bytes(b"repo = \"\xff\"\n")
    assert cli.main(["--config", str(path), "status"]) == 2
    assert capsys.readouterr().err.startswith(f"vigo: {path}: cannot read settings: not UTF-8")
