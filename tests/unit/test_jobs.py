"""Release jobs and order between stacks: the x-vigo schema, `vigo check`'s rules for it, the
phases of a plan in x-vigo.after order, and which jobs a deploy runs. Pure, table-driven."""

from pathlib import Path

import pytest

from tests.support.tree import write_tree
from tests.unit.test_lint import BASE, stack
from vigo.core import xvigo
from vigo.core.lint import lint_tree
from vigo.core.model import CREATE, REMOVE, UNCHANGED, UPDATE, Action, Plan, Resolved
from vigo.core.plan import blocked, job_reasons, levels, phases
from vigo.core.xvigo import AFTER, BEFORE, Job, Options

SERVICES = {"web": {"image": "x"}, "migrate": {"image": "x"}}


@pytest.mark.parametrize("block, options, problems", [
    pytest.param(None, Options(), [], id="no-block"),
    pytest.param({"health_timeout": 300}, Options(health_timeout=300), [], id="health-timeout"),
    pytest.param({"after": ["db", "cache", "db"]}, Options(after=("db", "cache")), [],
                 id="after-deduplicated"),
    pytest.param({"after": "db"}, Options(after=("db",)), [], id="after-one-name"),
    pytest.param({"after": None, "jobs": None}, Options(), [], id="empty-as-compose-gives-them"),
    pytest.param({"jobs": {"migrate": {"when": "before", "timeout": 60}}},
                 Options(jobs=(Job("migrate", BEFORE, 60),)), [], id="before-job"),
    pytest.param({"jobs": {"migrate": "after"}}, Options(jobs=(Job("migrate", AFTER),)), [],
                 id="after-job-short-form"),
    pytest.param([1], Options(), ["x-vigo"], id="not-a-mapping"),
    pytest.param({"afterr": ["db"]}, Options(), ["x-vigo.afterr"], id="unknown-key"),
    pytest.param({"health_timeout": "300"}, Options(), ["x-vigo.health_timeout"],
                 id="timeout-a-string"),
    pytest.param({"health_timeout": True}, Options(), ["x-vigo.health_timeout"],
                 id="timeout-a-bool"),
    pytest.param({"health_timeout": 0}, Options(), ["x-vigo.health_timeout"], id="timeout-0"),
    pytest.param({"after": {"db": 1}}, Options(), ["x-vigo.after"], id="after-a-mapping"),
    pytest.param({"after": [1, ""]}, Options(), ["x-vigo.after", "x-vigo.after"],
                 id="after-not-names"),
    pytest.param({"after": ["app"]}, Options(), ["x-vigo.after"], id="after-itself"),
    pytest.param({"jobs": ["migrate"]}, Options(), ["x-vigo.jobs"], id="jobs-a-list"),
    pytest.param({"jobs": {"migrate": {"when": "during"}}}, Options(),
                 ["x-vigo.jobs.migrate.when"], id="when-unknown"),
    pytest.param({"jobs": {"migrate": {}}}, Options(), ["x-vigo.jobs.migrate.when"],
                 id="when-missing"),
    pytest.param({"jobs": {"migrate": {"when": "before", "timeout": 99999}}}, Options(),
                 ["x-vigo.jobs.migrate.timeout"], id="job-timeout-too-long"),
    pytest.param({"jobs": {"migrate": {"when": "before", "retries": 3}}}, Options(),
                 ["x-vigo.jobs.migrate.retries"], id="job-key-unknown"),
    pytest.param({"jobs": {"nosuch": "before"}}, Options(), ["x-vigo.jobs.nosuch"],
                 id="job-no-service"),
    pytest.param({"jobs": {"migrate": 3}}, Options(), ["x-vigo.jobs.migrate"],
                 id="job-a-number"),
])
def test_parse(block, options, problems) -> None:
    got, found = xvigo.parse(block, SERVICES, "app")
    assert got == options
    assert [p.key for p in found] == problems
    assert all(p.message and p.fix for p in found)


@pytest.mark.parametrize("services, problem", [
    pytest.param({"web": {"depends_on": ["migrate"]}, "migrate": {}}, "service web depends on",
                 id="depended-on-list"),
    pytest.param({"web": {"depends_on": {"migrate": {"condition":
                                                     "service_completed_successfully"}}},
                  "migrate": {}}, "service web depends on", id="depended-on-condition"),
    pytest.param({"migrate": {"scale": 2}}, "has scale: 2", id="scaled"),
    pytest.param({"migrate": {"deploy": {"replicas": 3}}}, "has deploy.replicas: 3",
                 id="replicas"),
])
def test_job_service_rules(services, problem) -> None:
    options, found = xvigo.parse({"jobs": {"migrate": "before"}}, services)
    assert options.jobs == ()
    assert [p.message for p in found if problem in p.message]


@pytest.mark.parametrize("after, chain", [
    pytest.param({}, [], id="none"),
    pytest.param({"app": ["db"], "db": []}, [], id="a-chain"),
    pytest.param({"a": ["b"], "b": ["a"]}, ["a", "b", "a"], id="two"),
    pytest.param({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}, ["a", "b", "c", "a"],
                 id="three"),
    pytest.param({"x": ["y"], "y": ["y"]}, ["y", "y"], id="self-loop"),
    pytest.param({"a": ["b", "c"], "b": ["c"], "c": []}, [], id="diamond"),
])
def test_cycle(after, chain) -> None:
    assert xvigo.cycle(after) == chain


def test_order_problems_name_the_chain_and_unknown_stacks() -> None:
    found = xvigo.order_problems({"app": ["db"], "db": ["app"], "web": ["nosuch"]},
                                 ["app", "db", "web"])
    assert sorted(found) == ["app", "db", "web"]
    assert "app -> db -> app" in found["app"] and "app -> db -> app" in found["db"]
    assert "nosuch" in found["web"] and "no stack" in found["web"]


@pytest.mark.parametrize("names, after, expected", [
    pytest.param(["a", "b"], {}, [["a", "b"]], id="independent-in-parallel"),
    pytest.param(["app", "db"], {"app": ["db"]}, [["db"], ["app"]], id="after"),
    pytest.param(["app"], {"app": ["db"]}, [["app"]], id="dependency-not-changing"),
    pytest.param(["a", "b", "c", "d"], {"a": ["b"], "b": ["c"], "d": ["c"]},
                 [["c"], ["b", "d"], ["a"]], id="levels"),
    pytest.param(["a", "b", "c"], {"a": ["b"], "b": ["a"]}, [["c"], ["a", "b"]],
                 id="cycle-last"),
])
def test_levels(names, after, expected) -> None:
    assert levels(names, after) == expected


def _kinds(*pairs: tuple[str, str]) -> Plan:
    return Plan(revision="r", actions=tuple(Action(name, kind) for name, kind in pairs))


@pytest.mark.parametrize("actions, after, expected", [
    pytest.param([("app", CREATE), ("db", CREATE), ("web", UPDATE)], {"app": ["db"]},
                 [["db", "web"], ["app"]], id="app-after-db-web-beside-db"),
    pytest.param([("proxy", UPDATE), ("app", UPDATE), ("db", UPDATE)], {"app": ["db"]},
                 [["proxy"], ["db"], ["app"]], id="proxy-still-first"),
    pytest.param([("app", REMOVE), ("db", REMOVE), ("x", REMOVE)], {"app": ["db"]},
                 [["app", "x"], ["db"]], id="removals-in-reverse"),
    pytest.param([("db", REMOVE), ("app", CREATE)], {"app": ["db"]}, [["db"], ["app"]],
                 id="removal-frees-first"),
    pytest.param([("app", UPDATE), ("db", UNCHANGED)], {"app": ["db"]}, [["app"]],
                 id="unchanged-dependency"),
])
def test_phases_in_order(actions, after, expected) -> None:
    assert [[a.stack for a in p] for p in phases(_kinds(*actions), after)] == expected


@pytest.mark.parametrize("after, results, failed, why", [
    pytest.param({"app": ["db"]}, {"db": True}, set(), "", id="db-converged"),
    pytest.param({"app": ["db"]}, {}, set(), "", id="db-unchanged"),
    pytest.param({"app": ["db"]}, {"db": False}, set(), "db did not converge", id="db-failed"),
    pytest.param({"app": ["db"]}, {}, {"db"}, "db did not converge", id="db-held-or-invalid"),
    pytest.param({}, {"db": False}, {"db"}, "", id="no-order"),
])
def test_blocked(after, results, failed, why) -> None:
    got = blocked("app", after, results, failed)
    assert (why in got) if why else got == ""
    if why:
        assert got.startswith("app: not attempted") and "x-vigo.after" in got


@pytest.mark.parametrize("done, hashes, expected", [
    pytest.param(None, {"migrate": "h1"}, ["runs job migrate before any container is replaced"],
                 id="first-time"),
    pytest.param({"migrate": "h1"}, {"migrate": "h1"}, [], id="ran-for-this-configuration"),
    pytest.param({"migrate": "h1"}, {"migrate": "h2"},
                 ["runs job migrate before any container is replaced"], id="changed"),
    pytest.param({"migrate": "h1"}, {}, ["runs job migrate before any container is replaced"],
                 id="hash-unknown-runs"),
    pytest.param("garbage", {"migrate": "h1"},
                 ["runs job migrate before any container is replaced"], id="hand-edited-record"),
])
def test_job_reasons(done, hashes, expected) -> None:
    res = Resolved({"web": "x", "migrate": "x"}, jobs=(Job("migrate", BEFORE),),
                   job_hashes=hashes)
    assert job_reasons(res, {} if done is None else {"job_hashes": done}) == expected


JOB = """\
  migrate:
    image: ghcr.io/org/app:sha-abc1234
"""


@pytest.mark.parametrize("files, rules", [
    pytest.param(stack(top="x-vigo:\n  jobs:\n    migrate: {when: before}\n"),
                 ["x-vigo"], id="job-no-service"),
    pytest.param({"stacks/app/docker-compose.yml":
                  "services:\n  web:\n    image: ghcr.io/org/app:sha-abc1234\n" + JOB
                  + "x-vigo:\n  jobs:\n    migrate: {when: before, timeout: 60}\n"},
                 [], id="valid-job"),
    pytest.param(stack(top="x-vigo:\n  wait: 3\n"), ["x-vigo"], id="unknown-key"),
    pytest.param({**stack(top="x-vigo:\n  after: [db]\n"),
                  **stack(name="db", top="x-vigo:\n  after: [app]\n")},
                 ["x-vigo-order", "x-vigo-order"], id="cycle"),
    pytest.param({**stack(top="x-vigo:\n  after: [db]\n"), **stack(name="db")}, [],
                 id="order"),
    pytest.param(stack(top="x-vigo:\n  after: [dbb]\n"), ["x-vigo-order"], id="no-such-stack"),
])
def test_check_rules(tmp_path: Path, files, rules) -> None:
    write_tree(tmp_path, {**BASE, **files})
    found = [f for f in lint_tree(tmp_path) if f.rule.startswith("x-vigo")]
    assert sorted(f.rule for f in found) == rules
    assert all(f.line for f in found)


def test_after_on_the_proxy_is_one_problem_of_the_one_parser() -> None:
    """Apply (reconcile) and `vigo check` read x-vigo through xvigo.parse: the proxy's
    `after` is refused by both, with the same words."""
    options, found = xvigo.parse({"after": ["db"]}, {}, "proxy")
    assert options.after == ()
    assert [p.line() for p in found] == [
        "x-vigo.after: is set on the proxy, which always runs first; fix: drop it"]
    assert xvigo.parse({"after": None}, {}, "proxy")[1] == []  # compose's resolved `[]`


def test_cycle_finding_names_the_chain(tmp_path: Path) -> None:
    write_tree(tmp_path, {**BASE, **stack(top="x-vigo:\n  after: [db]\n"),
                          **stack(name="db", top="x-vigo:\n  after: [app]\n")})
    found = [f for f in lint_tree(tmp_path) if f.rule == "x-vigo-order"]
    assert {f.path for f in found} == {"stacks/app/docker-compose.yml",
                                       "stacks/db/docker-compose.yml"}
    assert all("app -> db -> app" in f.message for f in found)


def test_status_shows_the_last_run_of_each_job() -> None:
    from tests.unit.test_status import NOW, data, row
    from tests.unit.test_status import stack as status_stack
    from vigo.host import state, status

    record = {"jobs": {"migrate": {"service": "migrate", "when": "before", "exit": 0,
                                   "duration": 4.25, "at": "2024-05-01T11:57:00+00:00",
                                   "revision": "d" * 40},
                       "warm": {"service": "warm", "when": "after", "exit": None,
                                "duration": "odd", "at": "", "revision": ""}},
              }
    app = {**status_stack("app", row("web", "running", "x:1", "now")),
           "jobs": status._jobs(state.StackRecord(record))}
    lines = status.to_text(data(stacks=[app]), NOW)
    assert f"  job migrate (before): exit 0, 4.2 s, 3 min ago at {'d' * 12}" in lines
    assert "  job warm (after): stopped at its timeout, ?, ? at -" in lines
    assert status._jobs(state.StackRecord({"jobs": ["garbage"]})) == []


def test_metrics_show_jobs() -> None:
    from tests.unit.test_metrics import samples
    from vigo.host import metrics

    jobs = metrics.jobs_of({
        "app": {"jobs": {"migrate": {"exit": 3, "duration": 1.5,
                                     "at": "2024-05-01T12:00:00+00:00"},
                         "warm": {"exit": None, "duration": 60, "at": "2024-05-01T12:00:00Z"},
                         "odd": {"exit": 0, "at": "not a time"}, "x": "garbage"}},
        "db": {"jobs": "garbage"}, "hand-edited": "x"})
    got = samples(metrics.render(metrics.Snapshot(1.0, True, 0.0, "", 0, {}, jobs=jobs)))
    at = 1714564800
    assert got[("vigo_job_last_exit_code", (("job", "migrate"), ("stack", "app")))] == 3
    assert got[("vigo_job_last_exit_code", (("job", "warm"), ("stack", "app")))] == -1
    assert got[("vigo_job_last_duration_seconds", (("job", "migrate"), ("stack", "app")))] == 1.5
    assert got[("vigo_job_last_run_timestamp_seconds", (("job", "warm"), ("stack", "app")))] == at
    assert not [k for k in got if ("job", "odd") in k[1] or ("job", "x") in k[1]]


@pytest.mark.parametrize("doc, project, creates, uses", [
    pytest.param({"services": {}}, None, {("networks", "*db_default")}, set(), id="default-net"),
    pytest.param({"volumes": {"data": {}}, "networks": {"default": {"name": "edge"}}}, None,
                 {("volumes", "*db_data"), ("networks", "edge")}, set(), id="named"),
    pytest.param({"volumes": {"data": None}}, "p-db",
                 {("volumes", "p-db_data"), ("networks", "p-db_default")}, set(),
                 id="with-the-project"),
    pytest.param({"volumes": {"d": {"external": True, "name": "p-x_d"}},
                  "networks": {"default": {"external": {"name": "front"}}}}, None,
                 set(), {("volumes", "p-x_d"), ("networks", "front")}, id="external"),
    pytest.param({"volumes": {"d": {"external": "true"}}, "networks": {}}, None,
                 {("networks", "*db_default")}, {("volumes", "d")}, id="external-string"),
    pytest.param("garbage", None, set(), set(), id="garbage"),
])
def test_shared(doc, project, creates, uses) -> None:
    got = xvigo.shared(doc, "db", project)
    assert (set(got.creates), set(got.uses)) == (creates, uses)


def test_implicit_after() -> None:
    shares = {
        "proxy": xvigo.shared({"networks": {"default": {"name": "proxy_net"}}}, "proxy"),
        "db": xvigo.shared({"volumes": {"data": {}}}, "db"),
        "app": xvigo.shared({"volumes": {"d": {"external": True, "name": "vigo-db_data"}},
                             "networks": {"default": {"external": True, "name": "proxy_net"}}},
                            "app"),
        "lone": xvigo.shared({"networks": {"n": {"external": True, "name": "hand-made"}}},
                             "lone"),
    }
    after, orphans = xvigo.implicit_after(shares, ("proxy",))
    assert after == {"app": {"db"}}  # the proxy always runs first: no order on it
    assert orphans == [("lone", "networks", "hand-made")]


def test_check_warns_of_an_external_volume_nothing_creates(tmp_path: Path) -> None:
    write_tree(tmp_path, {**BASE, **stack(top="volumes:\n  d:\n    external: true\n"
                                              "    name: vigo-db_data\n")})
    [found] = [f for f in lint_tree(tmp_path) if f.rule == "shared-resource"]
    assert found.severity == "warning" and found.line == 5 and "'vigo-db_data'" in found.message
    write_tree(tmp_path, stack(name="db", top="volumes:\n  data: {}\n"))
    assert [f for f in lint_tree(tmp_path) if f.rule == "shared-resource"] == []
