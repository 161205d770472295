"""Placement of swarm stacks (docs/swarm.md#placement): hosts/<node>/stacks/<stack>/ folders ->
the node set, its label and constraint, the labels to set and remove, the messages; render's
part (the folders in the stack's digest) and the adapter's argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigo.adapters import swarm as adapter
from vigo.core import render, swarm
from vigo.core.swarm import NodeInfo, Placement

NODES = ["a", "b", "c"]


@pytest.mark.parametrize("folders, want_nodes, warns, error", [
    ([], (), 0, ""),
    (["b"], ("b",), 0, ""),
    (["c", "b"], ("b", "c"), 0, ""),
    (["b", "node-9"], ("b",), 1, ""),
    (["node-9"], (), 0, "hosts/node-9/stacks/web places web on node-9, which is not a node of "
     "this swarm (nodes: a, b, c)"),
])
def test_placement_from_folders(folders, want_nodes, warns, error) -> None:
    got = swarm.placement("web", folders, NODES)
    assert got.nodes == want_nodes and len(got.warnings) == warns and got.error == error
    assert bool(got.value) == bool(want_nodes)
    if warns:
        assert "node-9, which is not a node of this swarm (nodes: a, b, c): ignored" in (
            got.warnings[0])
    if want_nodes:
        assert got.line() == "placement: " + ", ".join(want_nodes)


def test_the_hash_is_the_set_not_the_order() -> None:
    assert swarm.place_value(["b", "c"]) == swarm.place_value(["c", "b", "c"])
    assert swarm.place_value(["b"]) != swarm.place_value(["b", "c"])
    assert len(swarm.place_value(["b"])) == 8
    assert swarm.placement("w", ["c", "b"], NODES) == swarm.placement("w", ["b", "c"], NODES)


def test_problems_fail_the_stack() -> None:
    got = swarm.placement("web", ["b"], NODES, ["x differs"])
    assert got.error == "x differs" and not got.value


@pytest.mark.parametrize("files, rendered, bad", [
    ([("b", ".gitkeep", "e3b0")], {"compose.yml": "11"}, []),
    ([("b", "compose.yml", "11")], {"compose.yml": "11"}, []),
    ([("b", "compose.yml", "22")], {"compose.yml": "11"}, ["hosts/b/stacks/web/compose.yml "
                                                           "differs from"]),
    ([("c", "extra.conf", "33"), ("b", "conf/.gitkeep", "")], {"compose.yml": "11"},
     ["hosts/c/stacks/web/extra.conf is not a file of"]),
])
def test_placement_folder_files_identical_or_gitkeep(files, rendered, bad) -> None:
    got = swarm.placement_problems("web", files, rendered)
    assert len(got) == len(bad)
    for line, start in zip(got, bad, strict=True):
        assert line.startswith(start), line
        assert "a swarm service has one definition for all nodes" in line
        assert "use node labels or env" in line


def test_the_constraint_joins_the_stacks_own() -> None:
    model = {"services": {
        "web": {"image": "x:sha-1", "deploy": {"placement": {
            "constraints": ["node.labels.zone == a"], "max_replicas_per_node": 1}}},
        "db": {"image": "y:sha-2"}}}
    place = swarm.placement("web", ["b"], NODES)
    c = place.constraint("t-web")
    assert c == f"node.labels.io.vigo.place.t-web.{place.value} == true"
    plain = swarm.stack_file(model, "t-web", "web", "t-")
    doc = swarm.stack_file(model, "t-web", "web", "t-", constraint=c)
    web, db = doc["services"]["web"]["deploy"], doc["services"]["db"]["deploy"]
    assert web["placement"] == {"constraints": ["node.labels.zone == a", c],
                                "max_replicas_per_node": 1}
    assert db["placement"] == {"constraints": [c]}
    assert swarm.placed_value(doc, "t-web") == place.value
    assert swarm.placed_value(plain, "t-web") == "" and swarm.placed_value(doc, "t-we") == ""
    # a new set is a new stack file: the hash labels differ (the rolling update moves tasks)
    other = swarm.stack_file(model, "t-web", "web", "t-",
                             constraint=swarm.placement("web", ["c"], NODES).constraint("t-web"))
    hashes = {d["services"]["web"]["deploy"]["labels"][swarm.LABEL_HASH]
              for d in (plain, doc, other)}
    assert len(hashes) == 3
    assert "placement" not in plain["services"]["db"]["deploy"]


def _nodes(**labels: dict[str, str]) -> list[NodeInfo]:
    return [NodeInfo(f"id-{h}", h, labels.get(h, {})) for h in NODES]


def test_labels_a_changed_set_adds_and_removes() -> None:
    ns = "t-web"
    old, new = swarm.placement("web", ["a"], NODES), swarm.placement("web", ["a", "b"], NODES)
    lo, ln = swarm.place_label(ns, old.value), swarm.place_label(ns, new.value)
    nodes = _nodes(a={lo: "true", "zone": "x"}, c={"io.vigo.place.t-web-2.12345678": "true"})
    # before the deploy: the new set's label on both nodes; nothing removed yet
    assert swarm.labels_to_add(ns, new, nodes) == {"id-a": ln, "id-b": ln}
    after = _nodes(a={lo: "true", ln: "true"}, b={ln: "true"},
                   c={"io.vigo.place.t-web-2.12345678": "true", ln: "true"})
    # once converged: the old set's label goes, and the new one from a node out of the set;
    # another stack's label (t-web-2) and other labels are never named
    assert swarm.labels_to_remove(ns, new, after) == {"id-a": (lo,), "id-c": (ln,)}
    assert swarm.labels_to_add(ns, new, after) == {}
    # the rollback's placement kept: the failed set's label goes, the old one stays
    assert swarm.labels_to_remove(ns, old, after) == {"id-a": (ln,), "id-b": (ln,),
                                                      "id-c": (ln,)}
    # no folder any more: every placement label of the stack goes, nothing is added
    assert swarm.labels_to_add(ns, Placement(), after) == {}
    assert swarm.labels_to_remove(ns, Placement(), after) == {"id-a": tuple(sorted((lo, ln))),
                                                              "id-b": (ln,),
                                                              "id-c": (ln,)}


def test_parse_nodes() -> None:
    rows = [{"ID": "x1", "Description": {"Hostname": "a"}, "Spec": {"Labels": {"k": "v"}}},
            {"ID": "x2", "Description": {}, "Spec": {}}]
    assert swarm.parse_nodes(rows) == (NodeInfo("x1", "a", {"k": "v"}), NodeInfo("x2", "", {}))


def test_node_labels_argv() -> None:
    assert adapter.node_labels_argv("id1", {"io.vigo.place.t-web.0123abcd": "true"},
                                    ["io.vigo.place.t-web.89abcdef"]) == [
        "docker", "node", "update", "--label-add", "io.vigo.place.t-web.0123abcd=true",
        "--label-rm", "io.vigo.place.t-web.89abcdef", "id1"]


@pytest.mark.parametrize("text, want", [
    ("x-vigo: {engine: swarm}\nservices: {}\n", "swarm"),
    ("x-vigo:\n  health_timeout: 5\n  # note\n  engine: 'swarm'\nservices: {}\n", "swarm"),
    ("x-vigo: {engine: compose}\n", "compose"),
    ("services:\n  web: {image: x, labels: {engine: swarm}}\n", ""),
    ("", ""),
])
def test_engine_named_in_the_text(text, want) -> None:
    assert render.engine_named(text) == want


def _repo(tmp: Path, compose: str, files: dict[str, str]) -> Path:
    (tmp / "stacks/web").mkdir(parents=True)
    (tmp / "stacks/web/compose.yml").write_text(compose)
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    return tmp


SWARM = "x-vigo: {engine: swarm}\nservices: {web: {image: x}}\n"


def test_render_gives_a_swarm_stack_its_placement_folders(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "r", SWARM, {"hosts/n2/stacks/web/.gitkeep": "",
                                         "hosts/n3/stacks/web/compose.yml": SWARM,
                                         "hosts/mgr/stacks/web/extra": "x",
                                         "hosts/n2/env/.gitkeep": ""})
    web = render.render(repo, "mgr", "").stack("web")
    assert web is not None and web.placed_on == ("n2", "n3")
    assert [(n, rel) for n, rel, _ in web.placement] == [("n2", ".gitkeep"),
                                                         ("n3", "compose.yml")]
    assert "hosts/n2/stacks/web/.gitkeep" in web.digests  # the plan names a placement change
    assert "stacks/web/extra" in web.digests  # the manager's own overlay is content
    bare = render.render(_repo(tmp_path / "b", SWARM, {}), "mgr", "").stack("web")
    assert bare is not None and bare.hash != web.hash and bare.placement == ()


def test_render_leaves_compose_stacks_alone(tmp_path: Path) -> None:
    # a fleet: another host's overlay of a Compose stack changes nothing of this host's
    compose = "services: {web: {image: x}}\n"
    one = render.render(_repo(tmp_path / "a", compose, {"hosts/h2/stacks/web/x": "1"}), "h1", "")
    two = render.render(_repo(tmp_path / "b", compose, {}), "h1", "")
    assert one.stack("web").hash == two.stack("web").hash and one.stack("web").placement == ()
    # the host's default engine makes it a swarm stack
    three = render.render(_repo(tmp_path / "c", compose, {"hosts/h2/stacks/web/x": "1"}),
                          "h1", "", engine="swarm")
    assert three.stack("web").placed_on == ("h2",)


def _row(sid: str, constraints: list[str], image: str = "x:sha-1") -> dict:
    return {"ID": sid, "Spec": {"TaskTemplate": {"ContainerSpec": {"Image": image},
                                                 "Placement": {"Constraints": constraints}}}}


@pytest.mark.parametrize("before, after, tasks, allowed, want", [
    # nothing changed
    (_row("s", ["node.labels.io.vigo.place.t-web.aaaaaaaa == true"]),
     _row("s", ["node.labels.io.vigo.place.t-web.aaaaaaaa == true"]), [], frozenset(), False),
    # vigo's placement alone, every running task on an allowed node: Swarm rolls nothing
    (_row("s", ["node.labels.io.vigo.place.t-web.aaaaaaaa == true"]),
     _row("s", ["node.labels.io.vigo.place.t-web.bbbbbbbb == true"]),
     [{"ServiceID": "s", "DesiredState": "running", "NodeID": "n1"}], frozenset({"n1", "n2"}),
     False),
    # ... a task on a node out of the set: it moves (an update)
    (_row("s", ["node.labels.io.vigo.place.t-web.aaaaaaaa == true"]),
     _row("s", ["node.labels.io.vigo.place.t-web.bbbbbbbb == true"]),
     [{"ServiceID": "s", "DesiredState": "running", "NodeID": "n1"}], frozenset({"n2"}), True),
    # placement removed altogether: every node fits
    (_row("s", ["node.labels.io.vigo.place.t-web.aaaaaaaa == true"]), _row("s", []),
     [{"ServiceID": "s", "DesiredState": "running", "NodeID": "n1"}], frozenset({"n1"}), False),
    # the stack's own constraint or the image changed too: an update, as before
    (_row("s", ["node.labels.zone == a"]), _row("s", ["node.labels.zone == b"]), [],
     frozenset({"n1"}), True),
    (_row("s", []), _row("s", [], "x:sha-2"), [], frozenset({"n1"}), True),
    (_row("s", []), _row("s", ["node.labels.io.vigo.place.t-web.aaaaaaaa == true"]), [],
     None, True),
])
def test_a_placement_change_rolls_only_tasks_that_no_longer_fit(before, after, tasks, allowed,
                                                                want) -> None:
    assert swarm.changed(before, after, tasks, allowed) is want


@pytest.mark.parametrize("svc, key, flagged", [
    ({"tmpfs": ["/run"]}, "tmpfs", True),  # the converter never reads a service's tmpfs
    ({"shm_size": "64m"}, "shm_size", True),
    ({"cgroupns_mode": "host"}, "cgroupns_mode", True),
    ({"cpu_quota": 5000}, "cpu_quota", True),  # refused by the loader: forbidden
    ({"memswap_limit": "1g"}, "memswap_limit", True),
    ({"platform": "linux/amd64"}, "platform", True),  # not in a stack file at all
    ({"init": True}, "init", False),  # converted: ContainerSpec.Init
    ({"ulimits": {"nofile": 1024}}, "ulimits", False),
    ({"stop_signal": "SIGINT"}, "stop_signal", False),
    ({"extra_hosts": ["a:1.2.3.4"]}, "extra_hosts", False),
    ({"expose": [80]}, "expose", False),
    ({"extends": {"service": "b"}}, "extends", False),  # compose resolves it first
    ({"x-mine": 1}, "x-mine", False),
    ({"env_file": ["a.env"]}, "env_file", False),
])
def test_check_keys_against_the_stack_converter(svc, key, flagged) -> None:
    found = {i.key for i in swarm.check({"web": {"image": "x:sha-1", **svc}})}
    assert (key in found) is flagged, found
    if not flagged:
        doc = swarm.stack_file({"services": {"web": {"image": "x:sha-1", **svc}}},
                               "t-w", "w", "t-")
        assert (key in doc["services"]["web"]) is (key in swarm.ACCEPTED)
    tmp = swarm.stack_file({"services": {"web": {"image": "x", "tmpfs": ["/run"]}}},
                           "t-w", "w", "t-")
    assert "tmpfs" not in tmp["services"]["web"]


def test_vigo_check_says_where_placement_folders_place(tmp_path: Path) -> None:
    from vigo.core import lint

    text = SWARM
    repo = _repo(tmp_path, text, {"hosts/n2/stacks/web/.gitkeep": "",
                                  "hosts/n3/stacks/web/compose.yml": text.replace("x}", "y}"),
                                  "hosts/n4/stacks/web/compose.yml": text,
                                  "hosts/n5/env/.gitkeep": ""})
    found = [f for f in lint.lint_repo_files(repo) if f.rule == "swarm-placement"]
    placed = sorted(f.path for f in found if "places it on node" in f.message)
    assert placed == ["hosts/n2/stacks/web", "hosts/n3/stacks/web", "hosts/n4/stacks/web"]
    (bad,) = [f for f in found if "differs from" in f.message]
    assert bad.path == "hosts/n3/stacks/web/compose.yml" and bad.severity == lint.WARNING
    assert "a swarm service has one definition for all nodes" in bad.message
    (repo / "stacks/web/compose.yml").write_text("services: {web: {image: x}}\n")  # Compose
    assert not [f for f in lint.lint_repo_files(repo) if f.rule == "swarm-placement"]
