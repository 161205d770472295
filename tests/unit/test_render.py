"""Table-driven tests of vigo.core.render: small checkouts in tmp_path in, DesiredState out."""

from pathlib import Path

import pytest

from tests.support.tree import Link, write_tree
from vigo.core.render import render

HOST = "web-1"
OVERLAY_WARNING = "{}: ignored (a host overlay holds only proxy/, stacks/ and env/)"

BASE = {
    "README.md": "the infra repo\n",
    "proxy/docker-compose.yml": "services: {traefik: {image: traefik:v3.1}}\n",
    "stacks/app/docker-compose.yml": "services: {web: {image: app}}\n",
    "stacks/app/conf/app.ini": "base\n",
    "stacks/other/compose.yaml": "services: {db: {image: postgres}}\n",
    "env/global.env": "G=ENC[...]\n",
    "env/app.env": "A=ENC[...]\n",
    "env/other.env": "O=ENC[...]\n",
}




def checkout(tmp_path: Path, extra: dict[str, str], base: dict[str, str] = BASE) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "outside.txt").write_text("not in the repo\n")
    return write_tree(tmp_path / "repo", {**base, **extra})


@pytest.mark.parametrize("extra, expected, warnings", [
    pytest.param({"hosts/web-1/stacks/app/conf/app.ini": "overlay\n"},
                 {"stacks/app/conf/app.ini": "overlay\n"}, (), id="overlay-replaces-a-file"),
    pytest.param({"hosts/web-1/stacks/app/extra.yml": "x\n"},
                 {"stacks/app/extra.yml": "x\n"}, (), id="overlay-only-file-is-added"),
    pytest.param({"hosts/web-1/env/app.env": "A=host\n"},
                 {"env/app.env": "A=host\n"}, (), id="overlay-replaces-an-env-file"),
    pytest.param({"hosts/web-2/stacks/app/conf/app.ini": "other host\n",
                  "hosts/web-2/stacks/new/docker-compose.yml": "x\n"},
                 {"stacks/app/conf/app.ini": "base\n", "stacks/new/docker-compose.yml": None}, (),
                 id="other-hosts-overlays-ignored"),
    pytest.param({"hosts/web-10/stacks/app/conf/app.ini": "prefix of the name\n"},
                 {"stacks/app/conf/app.ini": "base\n"}, (), id="host-name-prefix-is-not-a-match"),
    pytest.param({"hosts/web-1/README.md": "notes\n", "hosts/web-1/etc/x.conf": "x\n"},
                 {"README.md": "the infra repo\n", "etc/x.conf": None},
                 (OVERLAY_WARNING.format("hosts/web-1/README.md"),
                  OVERLAY_WARNING.format("hosts/web-1/etc/x.conf")),
                 id="overlay-outside-roots-warns"),
])
def test_overlay(tmp_path, extra, expected, warnings):
    desired = render(checkout(tmp_path, extra), HOST, "rev")
    seen = {rel: src.read_text() for rel, src in {**desired.files, **desired.env_files}.items()}
    assert {rel: seen.get(rel) for rel in expected} == expected
    assert sorted(desired.warnings) == sorted(warnings)
    assert not [rel for rel in desired.files if rel.startswith("hosts/")]
    assert not [rel for rel in desired.files if rel.startswith("env/")]
    assert sorted(desired.env_files) == sorted(r for r in seen if r.startswith("env/"))


OUT = "is a symlink that points outside the repo"


@pytest.mark.parametrize("extra, problems, blocked, warnings", [
    pytest.param({"stacks/app/secret.txt": Link("../../../outside.txt")},
                 {"app": (f"stacks/app/secret.txt {OUT}",)}, {"stacks/app/secret.txt"}, (),
                 id="outside-the-repo-fails-its-stack-only"),
    pytest.param({"hosts/web-1/stacks/app/x.txt": Link("/etc/hostname")},
                 {"app": (f"hosts/web-1/stacks/app/x.txt {OUT}",)}, {"stacks/app/x.txt"}, (),
                 id="outside-the-repo-in-the-overlay"),
    pytest.param({"hosts/web-2/stacks/app/x.txt": Link("/etc/hostname")}, {}, set(), (),
                 id="outside-the-repo-in-another-hosts-overlay"),
    pytest.param({"stacks/third/docker-compose.yml": Link("../../../outside.txt")},
                 {"third": (f"stacks/third/docker-compose.yml {OUT}",)},
                 {"stacks/third/docker-compose.yml"}, (), id="compose-file-outside-the-repo"),
    pytest.param({"env/global.env": Link("../../outside.txt")},
                 {s: (f"env/global.env {OUT}",) for s in ("proxy", "app", "other")},
                 {"env/global.env"}, (), id="global-env-outside-fails-every-stack"),
    pytest.param({"stacks/app/conf.d": Link("../other")},
                 {"app": ("stacks/app/conf.d is a symlink to a folder (not supported: "
                          "copy the files)",)}, {"stacks/app/conf.d"}, (), id="folder-symlink"),
    pytest.param({"stacks/app/gone.txt": Link("nowhere.txt")},
                 {"app": ("stacks/app/gone.txt is a broken symlink",)}, {"stacks/app/gone.txt"},
                 (), id="broken-symlink"),
    pytest.param({"docs/x.txt": Link("../../outside.txt")}, {}, set(),
                 (f"docs/x.txt {OUT}: not copied",), id="outside-the-repo-owned-by-no-stack"),
])
def test_refused_symlinks(tmp_path, extra, problems, blocked, warnings):
    desired = render(checkout(tmp_path, extra), HOST, "rev")
    assert {s.name: s.problems for s in desired.stacks if s.problems} == problems
    assert desired.blocked == blocked
    assert not blocked & set(desired.files)
    assert desired.warnings == warnings
    assert "stacks/app/conf/app.ini" in desired.files  # the rest of the tree is still there


def test_symlink_to_a_file_inside_the_repo_is_followed(tmp_path):
    repo = checkout(tmp_path, {"shared/common.ini": "common\n",
                               "stacks/app/common.ini": Link("../../shared/common.ini")})
    desired = render(repo, HOST, "rev")
    assert desired.files["stacks/app/common.ini"].read_text() == "common\n"
    assert "stacks/app/common.ini" in desired.stack("app").files
    assert desired.stack("app").problems == ()


COMPOSE = "services: {}\n"


@pytest.mark.parametrize("tree, expected", [
    pytest.param({"stacks/app/docker-compose.yml": COMPOSE},
                 [("app", "stacks/app/docker-compose.yml", ())], id="docker-compose.yml"),
    pytest.param({"stacks/app/compose.yaml": COMPOSE},
                 [("app", "stacks/app/compose.yaml", ())], id="compose.yaml"),
    pytest.param({"stacks/app/compose.yaml": COMPOSE, "stacks/app/docker-compose.yml": COMPOSE},
                 [("app", "stacks/app/compose.yaml",
                   ("stacks/app/compose.yaml and stacks/app/docker-compose.yml both exist: "
                    "keep one compose file",))], id="two-compose-files"),
    pytest.param({"stacks/app/README.md": "x", "stacks/app/sub/docker-compose.yml": COMPOSE,
                  "stacks/docker-compose.yml": COMPOSE},
                 [("app", "stacks/app/compose.yaml", (
                     "stacks/app/ has no compose file (compose.yaml, compose.yml, "
                     "docker-compose.yml, docker-compose.yaml): add one, or remove the folder to "
                     "remove the stack (its containers keep running until then)",))],
                 id="no-compose-file-at-the-top-fails-never-prunes"),
    pytest.param({"stacks/My.App/docker-compose.yml": COMPOSE},
                 [("My.App", "stacks/My.App/docker-compose.yml",
                   ("stack name 'My.App' is not a valid compose project name "
                    "(use lowercase letters, digits, '-' and '_')",))], id="invalid-stack-name"),
    pytest.param({"stacks/proxy/docker-compose.yml": COMPOSE},
                 [("proxy", "stacks/proxy/docker-compose.yml",
                   ("a stack may not be called 'proxy' (that is the proxy's project name)",))],
                 id="stack-called-proxy"),
    pytest.param({"stacks/b/compose.yaml": COMPOSE, "stacks/a/docker-compose.yml": COMPOSE,
                  "proxy/compose.yaml": COMPOSE},
                 [("proxy", "proxy/compose.yaml", ()), ("a", "stacks/a/docker-compose.yml", ()),
                  ("b", "stacks/b/compose.yaml", ())], id="proxy-first-then-by-name"),
])
def test_stack_discovery(tmp_path, tree, expected):
    desired = render(write_tree(tmp_path, tree), HOST, "rev")
    assert [(s.name, s.compose_file, s.problems) for s in desired.stacks] == expected


def test_stack_called_proxy_next_to_the_proxy(tmp_path):
    repo = write_tree(tmp_path, {"proxy/docker-compose.yml": COMPOSE,
                                 "stacks/proxy/docker-compose.yml": COMPOSE})
    desired = render(repo, HOST, "rev")
    proxy = desired.stack("proxy")
    assert proxy.compose_file == "proxy/docker-compose.yml"
    assert proxy.problems


ENV = {"env/global.env": "G=1\n", "env/app.env": "A=1\n", "env/shared.env": "S=1\n",
       "env/other.env": "O=1\n", "env/webapp.env": "W=1\n"}


@pytest.mark.parametrize("compose, env, interpolation, env_files", [
    pytest.param(COMPOSE, ENV, ("env/global.env", "env/app.env"),
                 ("env/global.env", "env/app.env"), id="global-then-own"),
    pytest.param(COMPOSE, {"env/app.env": "A=1\n"}, ("env/app.env",), ("env/app.env",),
                 id="own-only"),
    pytest.param(COMPOSE, {"env/global.env": "G=1\n"}, ("env/global.env",),
                 ("env/global.env",), id="global-only"),
    pytest.param(COMPOSE, {}, (), (), id="none"),
    pytest.param("services: {web: {env_file: [../../env/shared.env, ../../env/global.env]}}\n",
                 ENV, ("env/global.env", "env/app.env"),
                 ("env/global.env", "env/app.env", "env/shared.env"), id="mentioned-by-name"),
    pytest.param("# uses ../../env/webapp.env\n", {"env/webapp.env": "W=1\n"}, (),
                 ("env/webapp.env",), id="mentioned-other-stacks-env"),
    pytest.param("services: {web: {env_file: ../../env/mywebapp.env}}\n",
                 {"env/webapp.env": "W=1\n", "env/mywebapp.env": "M=1\n"}, (),
                 ("env/mywebapp.env",), id="name-inside-a-longer-name-is-no-mention"),
])
def test_env_files(tmp_path, compose, env, interpolation, env_files):
    desired = render(write_tree(tmp_path, {"stacks/app/docker-compose.yml": compose, **env}), HOST,
                     "rev")
    app = desired.stack("app")
    assert (app.interpolation_env, app.env_files) == (interpolation, env_files)
    assert set(app.env_files) <= set(app.digests)
    assert not set(desired.env_files) & set(desired.files)


HASH_BASE = {**BASE, "env/shared.env": "S=1\n",
             "stacks/app/docker-compose.yml": "services: {web: {env_file: ../../env/shared.env}}\n"}


@pytest.mark.parametrize("changed, app_hash_changes", [
    ("stacks/app/docker-compose.yml", True),
    ("stacks/app/conf/app.ini", True),
    ("stacks/app/new.txt", True),
    ("env/app.env", True),
    ("env/global.env", True),
    ("env/shared.env", True),
    ("hosts/web-1/stacks/app/conf/app.ini", True),
    ("README.md", False),
    ("stacks/other/compose.yaml", False),
    ("env/other.env", False),
    ("proxy/docker-compose.yml", False),
    ("hosts/web-2/stacks/app/conf/app.ini", False),
    ("hosts/web-1/stacks/other/x.txt", False),
])
def test_stack_hash_changes_with_its_own_files_only(tmp_path, changed, app_hash_changes):
    before = render(checkout(tmp_path / "a", {}, HASH_BASE), HOST, "rev-1").stack("app")
    after = render(checkout(tmp_path / "b", {changed: "changed\n"}, HASH_BASE), HOST,
                   "rev-2").stack("app")
    assert (before.hash != after.hash) is app_hash_changes
