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
