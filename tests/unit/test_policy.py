"""The policy over resolved models: recorded `docker compose config --format json` outputs
(tests/fixtures/compose-config/*.json, re-recorded by record.sh there) and small hand-made
members of each class, good and bad."""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigo import config
from vigo.core import policy
from vigo.core.policy import Policy, Scope, judge

FIXTURES = Path(__file__).parent.parent / "fixtures" / "compose-config"
RUNTIME = "/tmp/vigo-fixture/runtime"
STRICT = Policy()


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def scope(stack: str = "app") -> Scope:
    folder = f"{RUNTIME}/proxy" if stack == "proxy" else f"{RUNTIME}/stacks/{stack}"
    return Scope(stack, f"t-{stack}", folder, "t-proxy")


def found(model: dict, stack: str = "app", pol: Policy = STRICT,
          stand_ins: dict[str, str] | None = None) -> set[tuple[str, str, str]]:
    return {(v.rule, v.service, v.key) for v in judge(model, scope(stack), pol, stand_ins)}


def svc(**keys: Any) -> dict[str, Any]:
    """A resolved model of stack 'app' with one service 's'."""
    return {"name": "t-app", "services": {"s": {"image": "x:sha-1234567", **keys}},
            "networks": {"default": {"name": "t-app_default"}}}


def test_recorded_good_stack_and_proxy_pass() -> None:
    assert found(fixture("good"), "good") == set()
    assert found(fixture("proxy"), "proxy") == set()


def test_recorded_hostile_stack_trips_every_class() -> None:
    got = found(fixture("hostile"), "hostile")
    assert {rule for rule, _, _ in got} == {
        "privileged", "host-namespace", "network", "cap-add", "devices", "security-opt",
        "api-socket", "outside-container", "sysctl", "cgroup-parent", "runtime", "host-path",
        "docker-sock", "provider", "build", "port-exposed", "volume"}
    assert ("privileged", "a", "post_start") in got  # a privileged hook
    assert ("devices", "b", "deploy") in got  # a GPU reservation through deploy
    assert {key for rule, _, key in got if rule == "volume"} == {
        "volumes.root", "volumes.nfs", "volumes.stolen", "volumes.alias"}
    assert {key for rule, _, key in got if rule == "host-path" and not _} == {
        "configs.c1", "secrets.s1"}


def test_messages_name_the_stack_service_and_the_setting() -> None:
    lines = [v.line() for v in judge(fixture("hostile"), scope("hostile"), STRICT)]
    assert ("policy [privileged] stack 'hostile', service 'a': runs privileged (full control "
            "of the host); fix: remove it, or add 'hostile:privileged' to the allow_privileges "
            "setting") in lines
    assert any("8080/tcp on every interface" in x and "allow_ports" in x for x in lines)
    assert any("'/etc'" in x and "allow_host_paths" in x for x in lines)


def test_proxy_may_not_mount_the_socket_writable() -> None:
    [v] = judge(fixture("proxy-rw-sock"), scope("proxy"), STRICT)
    assert v.rule == "docker-sock" and "append `:ro`" in v.message


def test_placeholders_from_encrypted_values_are_unresolved() -> None:
    stand_ins = policy.placeholders(["NS", "DATA", "SUB", "DB_PASSWORD"])
    got = found(fixture("secret-values"), "secret-values", stand_ins=stand_ins)
    # labels and environment may carry secrets; bind sources and namespaces may not
    assert got == {("unresolved", "a", "network_mode"), ("unresolved", "a", "volumes")}
    numbers = policy.placeholders(["PORT"], numeric=True)
    assert found(fixture("secret-port"), "secret-port", stand_ins=numbers) == {
        ("unresolved", "a", "ports")}
    assert policy.env_text(numbers) == "PORT=47100\n"


@pytest.mark.parametrize(("keys", "expected"), [
    # privileged: YAML casting is compose's; the model says true
    ({"privileged": True}, {("privileged", "s", "privileged")}),
    ({"privileged": False}, set()),
    ({"pre_stop": [{"command": ["x"], "privileged": True}]}, {("privileged", "s", "pre_stop")}),
    ({"post_start": [{"command": ["x"]}]}, set()),
    # namespaces
    ({"network_mode": "host"}, {("host-namespace", "s", "network_mode")}),
    ({"network_mode": "none"}, set()),
    ({"network_mode": "container:t-proxy-traefik-1"}, {("host-namespace", "s", "network_mode")}),
    ({"network_mode": "service:s"}, set()),
    ({"network_mode": "service:elsewhere"}, {("host-namespace", "s", "network_mode")}),
    ({"network_mode": "t-db_default"}, {("host-namespace", "s", "network_mode")}),
    ({"pid": "host"}, {("host-namespace", "s", "pid")}),
    ({"pid": "service:s"}, set()),
    ({"ipc": "shareable"}, set()),
    ({"ipc": "host"}, {("host-namespace", "s", "ipc")}),
    ({"uts": "host"}, {("host-namespace", "s", "uts")}),
    ({"userns_mode": "host"}, {("host-namespace", "s", "userns_mode")}),
    ({"cgroup": "host"}, {("host-namespace", "s", "cgroup")}),
    ({"cgroup": "private"}, set()),
    # capabilities
    ({"cap_add": ["CHOWN", "CAP_KILL"]}, set()),
    ({"cap_add": ["ALL"]}, {("cap-add", "s", "cap_add")}),
    ({"cap_add": ["SYS_PTRACE"]}, {("cap-add", "s", "cap_add")}),
    ({"cap_drop": ["ALL"]}, set()),
    # devices
    ({"devices": [{"source": "/dev/kmsg", "target": "/dev/kmsg"}]}, {("devices", "s", "devices")}),
    ({"device_cgroup_rules": ["a *:* rwm"]}, {("devices", "s", "device_cgroup_rules")}),
    ({"gpus": [{"count": -1}]}, {("devices", "s", "gpus")}),
    ({"deploy": {"resources": {"limits": {"memory": "1g"}}}}, set()),
    # security_opt
    ({"security_opt": ["no-new-privileges:true", "no-new-privileges:false"]}, set()),
    ({"security_opt": ["no-new-privileges"]}, set()),
    ({"security_opt": ["seccomp:unconfined"]}, {("security-opt", "s", "security_opt")}),
    ({"security_opt": ["seccomp=/etc/permissive.json"]}, {("security-opt", "s", "security_opt")}),
    ({"security_opt": ["label=disable"]}, {("security-opt", "s", "security_opt")}),
    ({"security_opt": ["label=type:spc_t"]}, {("security-opt", "s", "security_opt")}),
    ({"security_opt": ["apparmor:unconfined"]}, {("security-opt", "s", "security_opt")}),
    ({"security_opt": ["systempaths=unconfined"]}, {("security-opt", "s", "security_opt")}),
    # the Docker API and other containers
    ({"use_api_socket": True}, {("api-socket", "s", "use_api_socket")}),
    ({"volumes_from": ["s"]}, set()),
    ({"volumes_from": ["container:t-proxy-traefik-1"]},
     {("outside-container", "s", "volumes_from")}),
    ({"volumes_from": ["proxy"]}, {("outside-container", "s", "volumes_from")}),
    ({"external_links": ["t-db-db-1:db"]}, {("outside-container", "s", "external_links")}),
    # sysctls
    ({"sysctls": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1", "fs.mqueue.msg_max": "1"}},
     set()),
    ({"sysctls": {"kernel.core_pattern": "|/x"}}, {("sysctl", "s", "sysctls")}),
    ({"sysctls": {"vm.overcommit_memory": "1"}}, {("sysctl", "s", "sysctls")}),
    ({"cgroup_parent": "system.slice"}, {("cgroup-parent", "s", "cgroup_parent")}),
    ({"runtime": "runc"}, {("runtime", "s", "runtime")}),
    ({"oom_kill_disable": True}, {("runtime", "s", "oom_kill_disable")}),
    ({"oom_score_adj": 500}, set()),
    ({"oom_score_adj": -17}, {("runtime", "s", "oom_score_adj")}),
    # mounts
    ({"volumes": [{"type": "bind", "source": f"{RUNTIME}/stacks/app/data", "target": "/d"}]},
     set()),
    ({"volumes": [{"type": "bind", "source": f"{RUNTIME}/stacks/app", "target": "/d"}]}, set()),
    ({"volumes": [{"type": "bind", "source": f"{RUNTIME}/stacks/app-other", "target": "/d"}]},
     {("host-path", "s", "volumes")}),
    ({"volumes": [{"type": "bind", "source": f"{RUNTIME}/env/db.env", "target": "/d"}]},
     {("host-path", "s", "volumes")}),
    ({"volumes": [{"type": "bind", "source": f"{RUNTIME}/stacks/app/../db", "target": "/d"}]},
     {("host-path", "s", "volumes")}),
    ({"volumes": [{"type": "bind", "source": "/root/.ssh", "target": "/d"}]},
     {("host-path", "s", "volumes")}),
    ({"volumes": [{"type": "cluster", "source": "x", "target": "/d"}]},
     {("host-path", "s", "volumes")}),
    ({"volumes": [{"type": "tmpfs", "target": "/t"}, {"type": "volume", "target": "/anon"}]},
     set()),
    ({"volumes": [{"type": "bind", "source": "/run/docker.sock", "target": "/s",
                   "read_only": True}]}, {("docker-sock", "s", "volumes")}),
    # hosts' plugins and the host's builder
    ({"provider": {"type": "model"}}, {("provider", "s", "provider")}),
    ({"models": {"llm": {}}}, {("provider", "s", "models")}),
    ({"build": {"context": "."}}, {("build", "s", "build")}),
    # ports
    ({"ports": [{"target": 80, "published": "8080", "host_ip": "127.0.0.1"}]}, set()),
    ({"ports": [{"target": 80, "published": "8080", "host_ip": "127.0.0.53"}]}, set()),
    ({"ports": [{"target": 80, "published": "8080", "host_ip": "::1"}]}, set()),
    ({"ports": [{"target": 80}]}, {("port-exposed", "s", "ports")}),  # a random host port
    ({"ports": [{"target": 80, "host_ip": "127.0.0.1"}]}, set()),
    ({"expose": ["80"]}, set()),
    ({"ports": [{"target": 80, "published": "8080"}]}, {("port-exposed", "s", "ports")}),
    ({"ports": [{"target": 80, "published": "8080", "host_ip": "::"}]},
     {("port-exposed", "s", "ports")}),
    ({"ports": [{"target": 80, "published": "8080", "host_ip": "192.168.1.2"}]},
     {("port-exposed", "s", "ports")}),
])
def test_service_rules(keys: dict[str, Any], expected: set) -> None:
    assert found(svc(**keys)) == expected


@pytest.mark.parametrize(("attach", "expected"), [
    ({"default": None}, set()),
    ({"default": {"aliases": ["traefik"]}}, {("network", "s", "networks")}),
    ({"default": {"ipv4_address": "172.30.0.2"}}, {("network", "s", "networks")}),
    ({"default": {"priority": 10}}, set()),
])
def test_nothing_is_squatted_on_the_proxy_network(attach: dict, expected: set) -> None:
    model = svc(networks=attach)
    model["networks"] = {"default": {"name": "t-proxy", "external": True}}
    assert found(model) == expected


@pytest.mark.parametrize(("networks", "expected"), [
    ({"default": {"name": "t-app_default"}}, set()),
    ({"default": {"name": "t-proxy", "external": True}}, set()),
    ({"default": {"name": "host", "external": True}}, {("network", "s", "networks")}),
    ({"default": {"name": "bridge", "external": True}}, {("network", "s", "networks")}),
    ({"default": {"name": "t-db_default", "external": True}}, {("network", "s", "networks")}),
    ({"default": {"name": "t-db_default"}}, {("network", "s", "networks")}),
    ({"default": {"name": "t-app_default", "driver": "macvlan"}},
     {("network", "s", "networks")}),
    ({"default": {"name": "t-app_default", "driver": "ipvlan"}},
     {("network", "s", "networks")}),
    ({"default": {"name": "t-app_default",
                  "driver_opts": {"com.docker.network.bridge.name": "eth0"}}},
     {("network", "s", "networks")}),
])
def test_network_rules(networks: dict, expected: set) -> None:
    model = svc(networks={"default": None})
    model["networks"] = networks
    assert found(model) == expected


@pytest.mark.parametrize(("volume", "expected"), [
    ({"name": "t-app_data"}, set()),
    ({"name": "t-app_data", "driver": "local"}, set()),
    ({"name": "t-app_data", "driver_opts": {"o": "bind", "type": "none", "device": "/"}},
     {("volume", "", "volumes.data")}),
    ({"name": "t-app_data", "driver_opts": {"type": "nfs", "o": "addr=10.0.0.1",
                                            "device": ":/x"}}, {("volume", "", "volumes.data")}),
    ({"name": "t-app_data", "driver": "local-persist"}, {("volume", "", "volumes.data")}),
    ({"name": "t-proxy_acme", "external": True}, {("volume", "", "volumes.data")}),
    ({"name": "t-db_data"}, {("volume", "", "volumes.data")}),
])
def test_volume_rules(volume: dict, expected: set) -> None:
    model = svc(volumes=[{"type": "volume", "source": "data", "target": "/d"}])
    model["volumes"] = {"data": volume}
    assert found(model) == expected


@pytest.mark.parametrize(("kind", "decl", "expected"), [
    ("configs", {"file": f"{RUNTIME}/stacks/app/conf"}, set()),
    ("configs", {"file": "/etc/shadow"}, {("host-path", "", "configs.c")}),
    ("secrets", {"file": f"{RUNTIME}/env/db.env"}, {("host-path", "", "secrets.c")}),
    ("secrets", {"environment": "TOKEN"}, set()),
    ("secrets", {"external": True}, {("host-path", "", "secrets.c")}),
])
def test_config_and_secret_files(kind: str, decl: dict, expected: set) -> None:
    model = svc(**{kind: [{"source": "c"}]})
    model[kind] = {"c": decl}
    assert found(model) == expected


def test_proxy_may_publish_and_read_the_socket() -> None:
    model = {"services": {"traefik": {
        "ports": [{"target": 80, "published": "80"}],
        "volumes": [{"type": "bind", "source": "/var/run/docker.sock", "target": "/s",
                     "read_only": True}]}},
        "networks": {"default": {"name": "t-proxy"}}}
    assert found(model, "proxy") == set()


@pytest.mark.parametrize(("pol", "keys", "expected"), [
    (Policy(allow_ports=frozenset({"app:8080"})),
     {"ports": [{"target": 80, "published": "8080"}]}, set()),
    (Policy(allow_ports=frozenset({"app:8080"})),
     {"ports": [{"target": 80, "published": "8080", "protocol": "udp"}]},
     {("port-exposed", "s", "ports")}),
    (Policy(allow_ports=frozenset({"app:53/udp"})),
     {"ports": [{"target": 53, "published": "53", "protocol": "udp"}]}, set()),
    (Policy(allow_ports=frozenset({"other:8080"})),
     {"ports": [{"target": 80, "published": "8080"}]}, {("port-exposed", "s", "ports")}),
    (Policy(allow_privileges=frozenset({"app:host-namespace"})), {"pid": "host"}, set()),
    (Policy(allow_privileges=frozenset({"other:host-namespace"})), {"pid": "host"},
     {("host-namespace", "s", "pid")}),
    (Policy(allow_privileges=frozenset({"app:privileged"})), {"pid": "host"},
     {("host-namespace", "s", "pid")}),
    (Policy(allow_caps=frozenset({"SYS_PTRACE"})), {"cap_add": ["SYS_PTRACE"]}, set()),
    (Policy(allow_host_paths=frozenset({"/srv/media"})),
     {"volumes": [{"type": "bind", "source": "/srv/media/films", "target": "/m"}]}, set()),
    (Policy(allow_host_paths=frozenset({"/srv/media"})),
     {"volumes": [{"type": "bind", "source": "/srv/media-other", "target": "/m"}]},
     {("host-path", "s", "volumes")}),
    # the Docker socket and unresolved values are never waived, nor a folder holding it
    (Policy(allow_host_paths=frozenset({"/var/run"})),
     {"volumes": [{"type": "bind", "source": "/var/run", "target": "/r"}]},
     {("docker-sock", "s", "volumes")}),
    (Policy(allow_host_paths=frozenset({"/var/run"})),
     {"volumes": [{"type": "bind", "source": "/var/run/app", "target": "/r"}]}, set()),
    (Policy(allow_privileges=frozenset({"app:docker-sock"}), allow_host_paths=frozenset({"/"})),
     {"volumes": [{"type": "bind", "source": "/var/run/docker.sock", "target": "/s"}]},
     {("docker-sock", "s", "volumes")}),
])
def test_allowlists(pol: Policy, keys: dict, expected: set) -> None:
    assert found(svc(**keys), pol=pol) == expected


def test_an_unresolved_value_replaces_the_rule_it_hides() -> None:
    stand_ins = policy.placeholders(["ROOT"])
    model = svc(volumes=[{"type": "bind", "source": "/vigo-placeholder/ROOT/x", "target": "/d"}],
                labels={"a": "/vigo-placeholder/ROOT"})
    assert found(model, stand_ins=stand_ins) == {("unresolved", "s", "volumes")}
    prefixed = svc(volumes=[{"type": "bind", "source": f"{RUNTIME}/stacks/app/vigo-placeholder/"
                             "ROOTS", "target": "/d"}])
    both = policy.placeholders(["ROOT", "ROOTS"])
    [v] = judge(prefixed, scope(), STRICT, both)
    assert "ROOTS" in v.message and "ROOT," not in v.message


@pytest.mark.parametrize(("port", "tainted"), [
    ({"target": 80, "published": "47100", "host_ip": "127.0.0.1"}, False),  # loopback: fine
    ({"target": 80, "published": "47100"}, True),  # every interface: allow_ports unknown
    ({"target": 80, "published": "8080", "host_ip": "/vigo-placeholder/IP"}, True),
])
def test_ports_from_encrypted_values(port: dict, tainted: bool) -> None:
    stand_ins = {"47100": "PORT", "/vigo-placeholder/IP": "IP"}
    got = found(svc(ports=[port]), stand_ins=stand_ins)
    assert (("unresolved", "s", "ports") in got) == tainted
    assert found(svc(ports=[port]), "proxy", stand_ins=stand_ins) == set()


def test_numeric_stand_ins_match_whole_numbers_only() -> None:
    stand_ins = policy.placeholders(["PORT"], numeric=True)
    assert found(svc(ports=[{"target": 80, "published": "471001", "host_ip": "127.0.0.1"}]),
                 stand_ins=stand_ins) == set()


def test_every_rule_is_in_the_table() -> None:
    assert set(policy.ALL_RULES) == {r.id for r in policy.RULES} | {"volume", "unresolved"}


@pytest.mark.parametrize(("key", "value", "ok"), [
    ("allow_ports", "gitea:2222", True),
    ("allow_ports", "dns:53/udp", True),
    ("allow_ports", "gitea", False),
    ("allow_ports", "gitea:22:22", False),
    ("allow_privileges", "netdata:host-namespace", True),
    ("allow_privileges", "netdata:docker-sock", False),
    ("allow_privileges", "netdata:unresolved", False),
    ("allow_privileges", "netdata:nope", False),
    ("allow_privileges", "Net:privileged", False),
])
def test_settings_entries(tmp_path: Path, key: str, value: str, ok: bool) -> None:
    path = tmp_path / "vigo.toml"
    path.write_text(f'repo = "/r"\nhost = "h"\n{key} = ["{value}"]\n')
    if ok:
        settings = config.load(path, {})
        built = config.policy_of(settings)
        assert value in getattr(built, key)
    else:
        with pytest.raises(config.ConfigError, match=key):
            config.load(path, {})


def test_policy_of_without_settings_is_strict() -> None:
    assert config.policy_of(None) == Policy()


SEGMENTS = st.sampled_from(["..", ".", "", "data", "app", "stacks", "app-other", "etc", "x"])


@given(st.lists(SEGMENTS, max_size=8), st.booleans())
def test_a_bind_is_allowed_exactly_when_it_normalises_into_the_folder(
        parts: list[str], absolute: bool) -> None:
    folder = f"{RUNTIME}/stacks/app"
    source = ("/" if absolute else folder + "/") + "/".join(parts)
    allowed = not policy.path_problem(source, scope(), STRICT)
    real = posixpath.normpath(source)
    assert allowed == (real == folder or real.startswith(folder + "/"))


@given(st.ip_addresses(), st.integers(1, 65535), st.sampled_from(["tcp", "udp"]))
def test_a_port_is_exposed_exactly_when_it_is_not_loopback(ip, port: int, proto: str) -> None:
    model = svc(ports=[{"target": 80, "published": str(port), "host_ip": str(ip),
                        "protocol": proto}])
    exposed = bool(found(model))
    assert exposed == (not ip.is_loopback)
    allowed = Policy(allow_ports=frozenset({f"app:{port}/{proto}"}))
    assert found(model, pol=allowed) == set()


def test_a_model_too_deep_to_read_counts_as_unresolved() -> None:
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    model = svc(volumes=deep)
    got = found(model, stand_ins=policy.placeholders(["X"]))
    assert ("unresolved", "s", "volumes") in got


def test_a_value_of_an_odd_shape_is_refused_not_a_crash() -> None:
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    got = found(svc(cgroup_parent=deep, network_mode=deep, sysctls={"a": 1}, ports="x"))
    assert ("cgroup-parent", "s", "cgroup_parent") in got
    assert ("host-namespace", "s", "") in got
