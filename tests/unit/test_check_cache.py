"""The cache of `vigo check` (workstation/cache.py): keyed by content, so a change anywhere in a
stack's inputs resolves it again, and a corrupt, tampered or foreign cache only costs work."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from vigo.core.lint import Policy
from vigo.workstation import cache as cache_mod
from vigo.workstation.cache import Cache, default_path
from vigo.workstation.check import check

APP = """services:
  web:
    image: ghcr.io/x/{name}:sha-1a2b3c4
    env_file:
      - ../../env/{name}.env
{extra}"""
ENV = "{key}=ENC[AES256_GCM,data:x]\nsops_mac=ENC[x]\n"
SOPS = "creation_rules:\n  - path_regex: (^|/)env/[^/]+\\.env$\n    age: [age1x]\n"


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def repo_of(tmp_path: Path, names=("a", "b", "c"), hosts=("h1", "h2")) -> Path:
    files = {".sops.yaml": SOPS}
    for name in names:
        files[f"stacks/{name}/compose.yaml"] = APP.format(name=name, extra="")
        files[f"env/{name}.env"] = ENV.format(key=name.upper() + "_X")
    for host in hosts:
        files[f"hosts/{host}/stacks/{names[0]}/notes.txt"] = host  # an overlay on stack a
    return write(tmp_path / "repo", files)


class _Res:
    def __init__(self, stdout: str = "", err: str = "") -> None:
        self.ok, self.stdout, self.err = not err, stdout, err

    def error(self, _n: int) -> str:
        return self.err


class Compose:
    """A stand-in resolver that records each stack it resolved and judges `privileged`."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def resolve(self, project: str, compose: Path, _env: Path) -> _Res:
        self.calls.append(project)
        privileged = "privileged: true" in compose.read_text()
        model = {"services": {"web": {"image": "x", "privileged": privileged}}}
        return _Res(json.dumps(model))

    def validate(self, _compose: Path) -> str:
        return ""


def run(repo: Path, compose: Compose, path: Path | None = None, salt: str = "compose 2.40.3",
        jobs: int = 1):
    cache = Cache(path or repo.parent / "cache.json", salt=salt)
    found = check(repo, Policy(), compose.validate, resolve=compose.resolve, cache=cache,
                  jobs=jobs)
    assert cache.save() == ""
    return [(f.rule, f.path) for f in found if f.severity == "error"], cache


def test_a_stack_the_overlays_do_not_change_is_resolved_once_per_run(tmp_path: Path) -> None:
    repo = repo_of(tmp_path)
    compose = Compose()
    assert run(repo, compose)[0] == []
    # base + h1 + h2: stacks b and c and the three trees' a are the same input except the
    # overlay's notes.txt in stack a's folder (hosts h1 and h2 differ from each other)
    assert sorted(compose.calls) == ["a", "a", "a", "b", "c"]


def test_a_warm_run_resolves_nothing_and_says_the_same(tmp_path: Path) -> None:
    repo = repo_of(tmp_path)
    write(repo, {"stacks/b/compose.yaml": APP.format(name="b", extra="    privileged: true\n")})
    first, _ = run(repo, Compose())
    compose = Compose()
    again, cache = run(repo, compose)
    assert again == first == [("privileged", "stacks/b/compose.yaml")]
    assert compose.calls == [] and cache.misses == 0


def test_one_changed_stack_is_the_only_one_resolved_again(tmp_path: Path) -> None:
    repo = repo_of(tmp_path)
    run(repo, Compose())
    write(repo, {"stacks/c/compose.yaml": APP.format(name="c", extra="    privileged: true\n")})
    compose = Compose()
    found, _ = run(repo, compose)
    assert compose.calls == ["c"]  # once, for all three trees
    assert found == [("privileged", "stacks/c/compose.yaml")]


@pytest.mark.parametrize("change", [
    pytest.param({"env/b.env": ENV.format(key="OTHER")}, id="env-file-it-reads"),
    pytest.param({"env/global.env": ENV.format(key="G")}, id="a-new-global-env"),
    pytest.param({"stacks/b/.env": "X=1\n"}, id="any-file-of-its-folder"),
])
def test_a_changed_input_resolves_the_stack_again(tmp_path: Path, change) -> None:
    repo = repo_of(tmp_path)
    run(repo, Compose())
    write(repo, change)
    compose = Compose()
    run(repo, compose)
    assert "b" in compose.calls


def test_an_env_file_named_by_path_is_part_of_the_key(tmp_path: Path) -> None:
    repo = repo_of(tmp_path)
    text = APP.format(name="b", extra="").replace("../../env/b.env", "../../shared/b.env")
    write(repo, {"stacks/b/compose.yaml": text, "shared/b.env": "A=1\n"})
    run(repo, Compose())
    write(repo, {"shared/b.env": "A=2\n"})
    compose = Compose()
    run(repo, compose)
    assert compose.calls.count("b") == 1


def test_a_changed_overlay_resolves_that_host_only(tmp_path: Path) -> None:
    repo = repo_of(tmp_path)
    run(repo, Compose())
    write(repo, {"hosts/h2/stacks/b/compose.yaml":
                 APP.format(name="b", extra="    privileged: true\n")})
    compose = Compose()
    found, _ = run(repo, compose)
    assert compose.calls == ["b"]
    assert found == [("privileged", "hosts/h2/stacks/b/compose.yaml")]


def test_an_included_file_is_part_of_the_key(tmp_path: Path) -> None:
    repo = repo_of(tmp_path)
    write(repo, {"stacks/b/compose.yaml": "include:\n  - ../../common/side.yaml\n"
                 + APP.format(name="b", extra=""),
                 "common/side.yaml": "services:\n  side:\n    image: x:sha-1a2b3c4\n"})
    run(repo, Compose())
    write(repo, {"common/side.yaml": "services:\n  side:\n    image: x:sha-2b3c4d5\n"})
    compose = Compose()
    run(repo, compose)
    assert compose.calls.count("b") == 1


@pytest.mark.parametrize("extra", [
    pytest.param("    extends: {file: /etc/vigo-shared.yaml, service: web}\n", id="absolute"),
    pytest.param("    extends: {file: '${BASE}/x.yaml', service: web}\n", id="variable"),
    pytest.param("    extends: {file: ../../../outside.yaml, service: web}\n", id="outside"),
])
def test_a_stack_reading_what_the_key_cannot_hold_is_resolved_every_run(
        tmp_path: Path, extra: str) -> None:
    repo = repo_of(tmp_path, hosts=())
    write(repo, {"stacks/b/compose.yaml": APP.format(name="b", extra=extra)})
    run(repo, Compose())
    compose = Compose()
    run(repo, compose)
    assert compose.calls == ["b"]


def test_the_environment_compose_sees_is_part_of_the_key(tmp_path: Path, monkeypatch) -> None:
    repo = repo_of(tmp_path, hosts=())
    write(repo, {"stacks/b/compose.yaml": APP.format(name="b", extra="    user: ${HOME}\n")})
    monkeypatch.setenv("HOME", "/home/one")
    run(repo, Compose())
    monkeypatch.setenv("HOME", "/home/two")
    compose = Compose()
    run(repo, compose)
    assert compose.calls == ["b"]


@pytest.mark.parametrize(("salt", "policy_change"), [
    pytest.param("compose 2.41.0", False, id="another-compose"),
    pytest.param("compose 2.40.3", True, id="another-policy"),
])
def test_tools_and_policy_are_part_of_the_key(tmp_path: Path, salt: str,
                                             policy_change: bool) -> None:
    repo = repo_of(tmp_path, hosts=())
    run(repo, Compose())
    compose = Compose()
    cache = Cache(repo.parent / "cache.json", salt=salt)
    policy = Policy(allow_caps=frozenset({"CHOWN"})) if policy_change else Policy()
    check(repo, policy, compose.validate, resolve=compose.resolve, cache=cache)
    assert sorted(compose.calls) == ["a", "b", "c"]


@pytest.mark.parametrize("text", [
    pytest.param(b"{not json", id="not-json"),
    pytest.param(b"", id="empty"),
    pytest.param(b"\xff\xfe\x00", id="binary"),
    pytest.param(b'{"format": 1, "vigo": "0.0.0-other", "run": 1, "entries": {}}',
                 id="another-version"),
    pytest.param(b'{"format": 99, "entries": {}}', id="another-format"),
    pytest.param(b'[1, 2, 3]', id="a-list"),
])
def test_a_corrupt_or_foreign_cache_file_is_ignored_and_replaced(tmp_path: Path,
                                                                  text: bytes) -> None:
    repo = repo_of(tmp_path, hosts=())
    write(repo, {"stacks/b/compose.yaml": APP.format(name="b", extra="    privileged: true\n")})
    path = repo.parent / "cache.json"
    path.write_bytes(text)
    compose = Compose()
    found, cache = run(repo, compose, path)
    assert found == [("privileged", "stacks/b/compose.yaml")]
    assert sorted(compose.calls) == ["a", "b", "c"]
    assert cache.note if text else True
    assert json.loads(path.read_bytes())["format"] == cache_mod.FORMAT  # replaced


def test_a_tampered_entry_is_not_believed(tmp_path: Path) -> None:
    """An entry whose value was changed (to "no findings") fails its checksum: the stack is
    resolved again and the finding stays."""
    repo = repo_of(tmp_path, hosts=())
    write(repo, {"stacks/b/compose.yaml": APP.format(name="b", extra="    privileged: true\n")})
    path = repo.parent / "cache.json"
    run(repo, Compose(), path)
    doc = json.loads(path.read_text())
    for entry in doc["entries"].values():
        value = entry["v"]
        if isinstance(value, dict) and value.get("found"):
            value["found"] = []
    path.write_text(json.dumps(doc))
    compose = Compose()
    found, _ = run(repo, compose, path)
    assert found == [("privileged", "stacks/b/compose.yaml")]
    assert compose.calls == ["b"]


def test_an_entry_copied_under_another_key_is_not_believed(tmp_path: Path) -> None:
    """The "ok" of stack a, pasted as the entry of stack b: the checksum binds each value to
    its own key."""
    repo = repo_of(tmp_path, hosts=())
    path = repo.parent / "cache.json"
    run(repo, Compose(), path)
    write(repo, {"stacks/b/compose.yaml": APP.format(name="b", extra="    privileged: true\n")})
    run(repo, Compose(), path)  # b's new key is in the file now
    doc = json.loads(path.read_text())
    clean = next(e for e in doc["entries"].values()
                 if isinstance(e["v"], dict) and e["v"].get("found") == [])
    for entry in doc["entries"].values():
        if isinstance(entry["v"], dict) and entry["v"].get("found"):
            entry["v"], entry["s"] = clean["v"], clean["s"]
    path.write_text(json.dumps(doc))
    compose = Compose()
    found, _ = run(repo, compose, path)
    assert found == [("privileged", "stacks/b/compose.yaml")]
    assert compose.calls == ["b"]


def test_a_finding_of_the_wrong_shape_is_a_miss(tmp_path: Path) -> None:
    """An entry with a valid checksum but not findings (a writer that knows the scheme) is
    still not used as a result."""
    repo = repo_of(tmp_path, hosts=())
    path = repo.parent / "cache.json"
    run(repo, Compose(), path)
    doc = json.loads(path.read_text())
    for key, entry in doc["entries"].items():
        if isinstance(entry["v"], dict) and "found" in entry["v"]:
            entry["v"] = {"found": [{"rule": 1}], "invalid": None}
            entry["s"] = cache_mod._sum(key, entry["v"])
    path.write_text(json.dumps(doc))
    compose = Compose()
    run(repo, compose, path)
    assert sorted(compose.calls) == ["a", "b", "c"]


def test_the_file_is_private_atomic_and_bounded(tmp_path: Path, monkeypatch) -> None:
    repo = repo_of(tmp_path, hosts=())
    path = repo.parent / "cache.json"
    run(repo, Compose(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".cache.json")] == []
    monkeypatch.setattr(cache_mod, "MAX_ENTRIES", 1)
    cache = Cache(path)
    for i in range(5):
        cache.put(f"old{i}", i)
    cache.save()
    again = Cache(path)
    again.put("new", 1)
    again.save()
    assert set(json.loads(path.read_text())["entries"]) == {"new"}  # this run's, then none
    monkeypatch.setattr(cache_mod, "MAX_ENTRIES", 100)
    monkeypatch.setattr(cache_mod, "MAX_RUNS", 2)
    for i in range(3):
        later = Cache(path)
        later.put(f"run{i}", i)
        later.save()
    assert set(json.loads(path.read_text())["entries"]) == {"run1", "run2"}  # "new": too old


def test_a_cache_that_is_a_link_is_not_read(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    link = tmp_path / "cache.json"
    link.symlink_to(target)
    assert "not a regular file" in Cache(link).note


def test_where_the_cache_lives(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "clone" / ".git").mkdir(parents=True)
    assert default_path(tmp_path / "clone") == tmp_path / "clone/.git/vigo-check-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    plain = default_path(tmp_path / "plain")
    assert plain.parent == tmp_path / "xdg/vigo" and plain.name.startswith("check-")
    assert default_path(tmp_path / "other") != plain


def test_parallel_jobs_give_the_same_findings(tmp_path: Path) -> None:
    repo = repo_of(tmp_path, names=tuple("abcdefgh"))
    for name in "bdf":
        write(repo, {f"stacks/{name}/compose.yaml":
                     APP.format(name=name, extra="    privileged: true\n")})
    one, _ = run(repo, Compose(), repo.parent / "one.json", jobs=1)
    four, _ = run(repo, Compose(), repo.parent / "four.json", jobs=4)
    assert one == four and len(one) == 3


def test_without_docker_compose_nothing_is_cached(tmp_path: Path) -> None:
    repo = repo_of(tmp_path, hosts=())
    write(repo, {"stacks/b/compose.yaml": APP.format(name="b", extra="    privileged: true\n")})
    path = repo.parent / "cache.json"
    for _ in range(2):
        cache = Cache(path, salt="compose 2.40.3")
        found = check(repo, Policy(), lambda _: None, resolve=lambda *_: None, cache=cache)
        cache.save()
        assert "policy-resolved" in [f.rule for f in found if f.severity == "warning"]
        assert ("privileged", "stacks/b/compose.yaml") in [(f.rule, f.path) for f in found]


def test_the_policy_digest_does_not_depend_on_set_order() -> None:
    # frozenset order follows PYTHONHASHSEED: the policy's digest must not
    from vigo.core.records import asdict

    a = Policy(allow_caps=frozenset(["CHOWN", "KILL", "SETUID", "SETGID"]))
    b = Policy(allow_caps=frozenset(["SETGID", "SETUID", "KILL", "CHOWN"]))
    assert cache_mod.digest(asdict(a)) == cache_mod.digest(asdict(b))


def test_remembered_parses_once_and_hands_out_copies(monkeypatch) -> None:
    from vigo.core import yamlsafe

    calls: list[bytes] = []
    real = yamlsafe._load_bytes

    def counting(data: bytes):
        calls.append(data)
        return real(data)

    monkeypatch.setattr(yamlsafe, "_load_bytes", counting)
    with yamlsafe.remembered():
        one = yamlsafe.load_bytes(b"services:\n  web:\n    image: x\n")
        one["services"]["web"]["image"] = "changed"  # a caller's change stays its own
        two = yamlsafe.load_bytes(b"services:\n  web:\n    image: x\n")
        for _ in range(2):
            with pytest.raises(yamlsafe.YamlRefused) as refused:
                yamlsafe.load_bytes(b"a: [")
    assert two["services"]["web"]["image"] == "x"
    assert two["services"].lc.line == 1  # line numbers survive the copy
    assert "not valid YAML" in refused.value.what
    assert len(calls) == 2
    yamlsafe.load_bytes(b"a: 1\n")
    assert len(calls) == 3  # outside it, nothing is remembered
