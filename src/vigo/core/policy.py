"""What push access may make Docker do to a host: rules over the RESOLVED model of a stack.

The input is the JSON of `docker compose config --format json`, i.e. what Docker will run after
interpolation, `extends`, `include`, YAML casting (`yes` -> true) and `!override`/`!reset`. The
text of the compose file is never trusted here. Deny by default: every key that touches the host
is an error unless a setting allows it (`allow_caps`, `allow_host_paths`, `allow_ports`, or a
per-stack `allow_privileges` entry `<stack>:<rule>`).

Pure: no adapter imports, no I/O. `RULES` is the one table a reviewer reads: rule id, what it
refuses, and which setting would allow it. `judge` returns `Violation`s; callers (reconcile at
apply, check offline) turn them into their messages and map them back to file lines.

Offline (`vigo check`), and at apply as a second opinion, variables from encrypted env files get
placeholder values (`placeholder(KEY)`): any security-relevant value that carries one cannot be
known before the host decrypts it, and is an error of its own (`unresolved`).
"""

from __future__ import annotations

import ipaddress
import json
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from vigo.core import model
from vigo.core.model import PROXY
from vigo.core.records import record

DEFAULT_PROXY_NETWORK = "proxy_default"
DEFAULT_CAPS = frozenset(model.DEFAULT_CAPS)  # the default of the allow_caps setting
PLACEHOLDER = "/vigo-placeholder/"  # path-shaped, so that bind sources and names still parse
NUMERIC_BASE = 47100  # the second try: numbers, for keys that end up in ports and the like
_SOCKS = frozenset({"/var/run/docker.sock", "/run/docker.sock"})


def placeholders(keys: Iterable[str], numeric: bool = False) -> dict[str, str]:
    """Offline stand-in values of encrypted variables: value -> key. Path-shaped first; when
    compose refuses those (a port, a number), distinct numbers."""
    ordered = sorted(set(keys))
    if numeric:
        return {str(NUMERIC_BASE + i): key for i, key in enumerate(ordered)}
    return {PLACEHOLDER + key: key for key in ordered}


def env_text(values: Mapping[str, str]) -> str:
    """The dotenv file that hands placeholders (value -> key) to compose's interpolation."""
    return "".join(f"{key}={value}\n" for value, key in values.items())


@record(frozen=True)
class Policy:
    """Allowlists from settings (config.policy_of builds it); the defaults are strict."""

    allow_unpinned: frozenset[str] = frozenset()  # stacks allowed latest/branch-* tags
    allow_caps: frozenset[str] = DEFAULT_CAPS
    allow_host_paths: frozenset[str] = frozenset()  # absolute host path prefixes for binds
    # "<stack>:<port>[/<proto>]": a port an app stack may publish on every interface
    allow_ports: frozenset[str] = frozenset()
    # "<stack>:<rule>": the stack may do what that rule of RULES refuses
    allow_privileges: frozenset[str] = frozenset()

    def waived(self, stack: str, rule: str) -> bool:
        return f"{stack}:{rule}" in self.allow_privileges

    def port_allowed(self, stack: str, port: str, proto: str) -> bool:
        return (f"{stack}:{port}/{proto}" in self.allow_ports
                or (proto == "tcp" and f"{stack}:{port}" in self.allow_ports))


@record(frozen=True)
class Scope:
    """Where a stack lives: the folder compose resolved its relative paths against."""

    stack: str
    project: str  # the compose project name (settings.project_prefix + stack)
    folder: str  # absolute: <runtime>/stacks/<name> or <runtime>/proxy
    proxy_network: str = DEFAULT_PROXY_NETWORK

    @property
    def is_proxy(self) -> bool:
        return self.stack == PROXY


@record(frozen=True)
class Violation:
    rule: str
    stack: str
    service: str  # '' for a top-level entry
    key: str  # the service key (or "volumes.<name>" / "networks.<name>" at top level)
    what: str  # names the stack and service and says what is refused
    fix: str  # which change, or which setting, would allow it

    @property
    def message(self) -> str:
        return f"{self.what}; fix: {self.fix}"

    def line(self, where: str = "") -> str:
        return f"policy [{self.rule}] " + (f"{where}: " if where else "") + self.message


@record(frozen=True)
class Rule:
    id: str
    refuses: str  # what the rule refuses, for the table in docs/security.md
    allow: str  # the setting that allows it ('' when nothing can)
    check: Callable[[str, dict, dict, Scope, Policy], Iterator[tuple[str, str]]]


# --- the checks: each yields (key, what) for one service -------------------------------------

def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on", "y")
    return bool(value)


def _privileged(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
                ) -> Iterator[tuple[str, str]]:
    if _truthy(svc.get("privileged")):
        yield "privileged", "runs privileged (full control of the host)"
    for hook in ("post_start", "pre_stop"):
        for item in _list(svc.get(hook)):
            if isinstance(item, dict) and _truthy(item.get("privileged")):
                yield hook, f"runs a privileged `{hook}` hook"


_NAMESPACE_OK = {
    "network_mode": {"", "none", "bridge", "default"},
    "pid": {""},
    "ipc": {"", "private", "shareable", "none"},
    "uts": {""},
    "userns_mode": {""},
    "cgroup": {"", "private"},
}


def _namespaces(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
                ) -> Iterator[tuple[str, str]]:
    services = model.get("services") or {}
    for key, fine in _NAMESPACE_OK.items():
        value = str(svc.get(key) or "").strip()
        if value.lower() in fine:
            continue
        kind, _, target = value.partition(":")
        if kind == "service" and key in ("network_mode", "pid", "ipc") and target in services:
            continue
        if kind == "container":
            yield key, f"`{key}: {value}` joins a container outside the stack"
        elif value.lower() == "host":
            yield key, f"`{key}: host` shares the host's namespace with the container"
        else:
            yield key, f"`{key}: {value}` shares a namespace the stack does not own"


def _networks(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
              ) -> Iterator[tuple[str, str]]:
    declared = model.get("networks") or {}
    attached = svc.get("networks")
    for net in _keys(attached):
        why = _network_problem(str(net), declared.get(net), scope)
        if why:
            yield "networks", f"is attached to network '{net}', {why}"
            continue
        shared = str(_dict(declared.get(net)).get("name") or net) == scope.proxy_network
        opts = _dict(_dict(attached).get(net))
        taken = [k for k in ("aliases", "ipv4_address", "ipv6_address", "link_local_ips",
                             "mac_address") if opts.get(k)]
        if shared and taken and not scope.is_proxy:
            yield "networks", f"sets {', '.join(taken)} on the shared proxy network " \
                              f"'{scope.proxy_network}' (names and addresses other stacks use)"


def _network_problem(key: str, decl: object, scope: Scope) -> str:
    decl = decl if isinstance(decl, dict) else {}
    real = str(decl.get("name") or key)
    driver = str(decl.get("driver") or "")
    if real in ("host", "bridge", "none") or driver in ("host", "macvlan", "ipvlan", "null"):
        if driver in ("macvlan", "ipvlan"):
            return f"a {driver} network straight on the host's interfaces"
        return f"which is Docker's '{real}' network, not one of the stack's own"
    if _truthy(decl.get("external")):
        if real == scope.proxy_network:
            return ""
        return f"the external network '{real}' (only the proxy network '{scope.proxy_network}' " \
               "may be external)"
    if decl.get("driver_opts"):
        return "whose driver_opts configure the host's network interfaces"
    if real != f"{scope.project}_{key}" and not (scope.is_proxy and real == scope.proxy_network):
        return f"named '{real}', which belongs to another project"
    return ""


def _caps(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
          ) -> Iterator[tuple[str, str]]:
    allowed = {_cap(c) for c in policy.allow_caps}
    for cap in _list(svc.get("cap_add")):
        c = _cap(cap)
        if c == "ALL":
            yield "cap_add", "adds capability ALL"
        elif c not in allowed:
            yield "cap_add", f"adds capability {c}, outside allow_caps"


def _cap(cap: object) -> str:
    return str(cap).strip().upper().removeprefix("CAP_")


def _devices(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
             ) -> Iterator[tuple[str, str]]:
    if svc.get("devices"):
        yield "devices", "passes host devices into the container"
    if svc.get("device_cgroup_rules"):
        yield "device_cgroup_rules", "opens host devices through device_cgroup_rules"
    if svc.get("gpus"):
        yield "gpus", "passes the host's GPUs into the container"
    reservations = _dict(_dict(_dict(svc.get("deploy")).get("resources")).get("reservations"))
    if reservations.get("devices"):
        yield "deploy", "reserves host devices (deploy.resources.reservations.devices)"


_SECURITY_OPT_OK = re.compile(r"no-new-privileges([:=](true|false))?|apparmor[:=]docker-default")


def _security_opt(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
                  ) -> Iterator[tuple[str, str]]:
    for opt in _list(svc.get("security_opt")):
        if not _SECURITY_OPT_OK.fullmatch(str(opt).strip()):
            yield "security_opt", f"sets `security_opt: {opt}` (weakens the host's confinement)"


def _api_socket(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
                ) -> Iterator[tuple[str, str]]:
    if _truthy(svc.get("use_api_socket")):
        yield "use_api_socket", "`use_api_socket` hands the container the Docker API (root)"


def _outside(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
             ) -> Iterator[tuple[str, str]]:
    services = model.get("services") or {}
    for item in _list(svc.get("volumes_from")):
        source = str(item).split(":")[0] if not str(item).startswith("container:") else str(item)
        if source not in services:
            yield "volumes_from", f"`volumes_from: {item}` takes the mounts of a container " \
                                  "outside the stack"
    if svc.get("external_links"):
        yield "external_links", "`external_links` reaches containers outside the stack"


# Namespaced sysctls Docker may set per container (the kernel's IPC and network namespaces).
_SYSCTL_OK = re.compile(r"kernel\.(msgmax|msgmnb|msgmni|sem|shmall|shmmax|shmmni|"
                        r"shm_rmid_forced)|fs\.mqueue\..+|net\..+")


def _sysctls(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
             ) -> Iterator[tuple[str, str]]:
    for key in _keys(svc.get("sysctls")):
        key = str(key).split("=")[0].strip()
        if not _SYSCTL_OK.fullmatch(key):
            yield "sysctls", f"sets the sysctl {key}, which is not namespaced (the host's)"


def _cgroup_parent(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
                   ) -> Iterator[tuple[str, str]]:
    if svc.get("cgroup_parent"):
        parent = _show(svc["cgroup_parent"])
        yield "cgroup_parent", f"`cgroup_parent: {parent}` places it in a host cgroup"


def _host_paths(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
                ) -> Iterator[tuple[str, str]]:
    for vol in _list(svc.get("volumes")):
        if not isinstance(vol, dict):
            yield "volumes", f"has a volume compose did not resolve: {_show(vol)}"
            continue
        kind, source = str(vol.get("type") or ""), str(vol.get("source") or "")
        if kind in ("volume", "tmpfs", "image"):
            continue
        if kind != "bind":
            yield "volumes", f"mounts a {kind or 'typeless'} volume '{source}' from the host"
            continue
        if posixpath.normpath(source) in _SOCKS:
            continue  # rule docker-sock
        why = path_problem(source, scope, policy)
        if why:
            yield "volumes", f"bind-mounts '{source}', {why}"


def path_problem(source: str, scope: Scope, policy: Policy) -> str:
    """'' when a host path stays inside the stack's folder or an allowed prefix."""
    if not source.startswith("/"):
        return "which is not an absolute path compose resolved"
    path = posixpath.normpath(source)
    if _under(path, scope.folder) or any(_under(path, p) for p in policy.allow_host_paths):
        return ""
    return "a host path outside the stack's folder and allow_host_paths"


def _under(path: str, prefix: str) -> bool:
    path, prefix = posixpath.normpath(path), posixpath.normpath(prefix)
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _docker_sock(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
                 ) -> Iterator[tuple[str, str]]:
    for vol in _list(svc.get("volumes")):
        if not isinstance(vol, dict) or vol.get("type") != "bind":
            continue
        source = posixpath.normpath(str(vol.get("source") or ""))
        if source not in _SOCKS:
            if source.startswith("/") and any(_under(sock, source) for sock in _SOCKS):
                yield "volumes", f"bind-mounts '{source}', which holds the Docker socket " \
                                 "(root on the host), whatever allow_host_paths says"
            continue
        if not scope.is_proxy:
            yield "volumes", "mounts the Docker socket (root on the host); only the proxy may"
        elif not _truthy(vol.get("read_only")):
            yield "volumes", "mounts the Docker socket writable"


def _provider(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
              ) -> Iterator[tuple[str, str]]:
    if svc.get("provider"):
        yield "provider", "is a `provider:` service (compose runs a plugin on the host)"
    if svc.get("models"):
        yield "models", "uses `models:` (compose runs a model provider on the host)"


def _build(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
           ) -> Iterator[tuple[str, str]]:
    if svc.get("build"):
        yield "build", "builds its image on the host (`build:`)"


def _runtime(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
             ) -> Iterator[tuple[str, str]]:
    if svc.get("runtime"):
        yield "runtime", f"selects the host's container runtime '{_show(svc['runtime'])}'"
    if _truthy(svc.get("oom_kill_disable")):
        yield "oom_kill_disable", "disables the OOM killer (the host runs out of memory first)"
    score = svc.get("oom_score_adj")
    if isinstance(score, (int, str)) and str(score).lstrip("-").isdigit() and int(score) < 0:
        yield "oom_score_adj", f"`oom_score_adj: {score}` makes the host kill others first"


def _ports(name: str, svc: dict, model: dict, scope: Scope, policy: Policy
           ) -> Iterator[tuple[str, str]]:
    if scope.is_proxy:
        return  # the proxy publishes 80/443 (and what else it needs)
    for port in _list(svc.get("ports")):
        if not isinstance(port, dict):
            yield "ports", f"publishes a port compose did not resolve: {_show(port)}"
            continue
        published = str(port.get("published") or "")
        host_ip = str(port.get("host_ip") or "")
        if _loopback(host_ip):
            continue
        proto = str(port.get("protocol") or "tcp")
        where = "every interface" if host_ip in ("", "0.0.0.0", "::") else host_ip
        if not published:  # `ports: ["80"]`: Docker picks a free host port
            yield "ports", f"publishes container port {port.get('target')}/{proto} on a " \
                           f"random host port on {where}"
            continue
        for one in _port_range(published):
            if not policy.port_allowed(scope.stack, one, proto):
                yield "ports", f"publishes {one}/{proto} on {where} (Docker's published " \
                               "ports bypass the host firewall)"


def _port_tainted(port: object, find: Callable[[object], set[str]]) -> bool:
    """A published port depends on an encrypted value where it matters: its address, or its
    number when it is published beyond loopback (allow_ports could not be checked)."""
    if not isinstance(port, dict):
        return bool(find(port))
    if find(port.get("host_ip")):
        return True
    return bool(find(port)) and not _loopback(str(port.get("host_ip") or ""))


def _loopback(host_ip: str) -> bool:
    try:
        return ipaddress.ip_address(host_ip.strip("[]")).is_loopback
    except ValueError:
        return False


def _port_range(published: str) -> list[str]:
    first, _, last = published.partition("-")
    if first.isdigit() and last.isdigit() and int(last) - int(first) < 1000:
        return [str(p) for p in range(int(first), int(last) + 1)]
    return [published]


RULES: tuple[Rule, ...] = (
    Rule("privileged", "`privileged: true` (any YAML spelling), privileged post_start/pre_stop "
         "hooks", "allow_privileges", _privileged),
    Rule("host-namespace", "network_mode, pid, ipc, uts, userns_mode, cgroup = host, or "
         "`container:`/`service:` outside the stack", "allow_privileges", _namespaces),
    Rule("network", "a network named host/bridge, a macvlan/ipvlan/host driver, an external "
         "network other than the proxy's, network driver_opts, another project's network, "
         "aliases or fixed addresses on the shared proxy network",
         "allow_privileges", _networks),
    Rule("cap-add", "cap_add beyond allow_caps, or ALL", "allow_caps", _caps),
    Rule("devices", "devices, device_cgroup_rules, gpus, deploy device reservations",
         "allow_privileges", _devices),
    Rule("security-opt", "security_opt other than no-new-privileges and apparmor=docker-default "
         "(seccomp/apparmor unconfined, label disable, systempaths=unconfined)",
         "allow_privileges", _security_opt),
    Rule("api-socket", "use_api_socket", "allow_privileges", _api_socket),
    Rule("outside-container", "volumes_from or external_links to a container outside the stack",
         "allow_privileges", _outside),
    Rule("sysctl", "sysctls that are not namespaced (only kernel.msg*/sem/shm*, fs.mqueue.*, "
         "net.* are)", "allow_privileges", _sysctls),
    Rule("cgroup-parent", "cgroup_parent", "allow_privileges", _cgroup_parent),
    Rule("runtime", "runtime, oom_kill_disable, negative oom_score_adj", "allow_privileges",
         _runtime),
    Rule("host-path", "bind (and npipe/cluster) sources outside the stack's folder and "
         "allow_host_paths; configs/secrets `file:` outside them", "allow_host_paths",
         _host_paths),
    Rule("docker-sock", "docker.sock mounted by anyone but the proxy, or writable", "",
         _docker_sock),
    Rule("provider", "`provider:` services and `models:` (compose runs a host plugin)",
         "allow_privileges", _provider),
    Rule("build", "`build:` (images come from a registry)", "allow_privileges", _build),
    Rule("port-exposed", "ports an app stack publishes on a non-loopback address",
         "allow_ports", _ports),
)

# Rules over the top level of the model (not per service); same table, listed in RULES_TOP.


def _top_volumes(model: dict, scope: Scope, policy: Policy) -> Iterator[tuple[str, str, str]]:
    for key, decl in _dict(model.get("volumes")).items():
        decl = _dict(decl)
        where = f"volumes.{key}"
        driver = str(decl.get("driver") or "local")
        opts = {str(k): str(v) for k, v in _dict(decl.get("driver_opts")).items()}
        if driver != "local":
            yield "volume", where, f"volume '{key}' uses the driver '{driver}' (a host plugin)"
        if opts:
            yield "volume", where, f"volume '{key}' has driver_opts {sorted(opts)} (a bind " \
                                   "or mount of the host's choosing)"
        if _truthy(decl.get("external")):
            yield "volume", where, f"volume '{key}' is external ('{decl.get('name') or key}'), " \
                                   "data of another project or of the host"
        elif str(decl.get("name") or f"{scope.project}_{key}") != f"{scope.project}_{key}":
            yield "volume", where, f"volume '{key}' is named '{decl.get('name')}', which " \
                                   "belongs to another project"


def _top_files(model: dict, scope: Scope, policy: Policy) -> Iterator[tuple[str, str, str]]:
    for kind in ("configs", "secrets"):
        for key, decl in _dict(model.get(kind)).items():
            decl = _dict(decl)
            where = f"{kind}.{key}"
            if "file" in decl:
                why = path_problem(str(decl["file"]), scope, policy)
                if why:
                    yield "host-path", where, f"{kind[:-1]} '{key}' reads '{decl['file']}', {why}"
            if _truthy(decl.get("external")):
                yield "host-path", where, f"{kind[:-1]} '{key}' is external (not the stack's)"


RULES_TOP: tuple[tuple[str, str, str, Callable[[dict, Scope, Policy],
                                                Iterator[tuple[str, str, str]]]], ...] = (
    ("volume", "top-level volumes: a driver other than local, any driver_opts (o: bind/rbind, "
     "type: none, device:), external volumes, another project's volume name",
     "allow_privileges", _top_volumes),
    ("host-path", "configs/secrets `file:` outside the stack's folder and allow_host_paths",
     "allow_host_paths", _top_files),
)

UNRESOLVED = "unresolved"
# Service keys whose value decides what the host grants: one that carries a placeholder (a value
# from an encrypted env file) cannot be judged before the host decrypts it.
SENSITIVE = frozenset({
    "privileged", "network_mode", "pid", "ipc", "uts", "userns_mode", "cgroup", "cgroup_parent",
    "cap_add", "cap_drop", "devices", "device_cgroup_rules", "gpus", "security_opt",
    "use_api_socket", "volumes_from", "external_links", "sysctls", "volumes", "ports",
    "networks", "runtime", "post_start", "pre_stop", "provider", "models", "build",
    "oom_kill_disable", "oom_score_adj",
})
ALL_RULES = {**{r.id: r.refuses for r in RULES}, **{r[0]: r[1] for r in RULES_TOP},
             UNRESOLVED: "a security-relevant value that depends on an encrypted variable "
                         "(cannot be checked before the host decrypts it)"}


def _fix(rule: str, scope: Scope) -> str:
    if rule == "cap-add":
        return "drop the capability, or add it to the allow_caps setting"
    if rule == "host-path":
        return ("use a path inside the stack's folder or a named volume, or add the prefix to "
                "the allow_host_paths setting")
    if rule == "port-exposed":
        return ("bind it to 127.0.0.1 (or route it through the proxy), or add "
                f"'{scope.stack}:<port>[/udp]' to the allow_ports setting")
    if rule == "docker-sock":
        return ("append `:ro` to the mount" if scope.is_proxy
                else "remove the mount; only the proxy may read the Docker socket")
    if rule == UNRESOLVED:
        return "write the value literally in the compose file (not from an encrypted env file)"
    return f"remove it, or add '{scope.stack}:{rule}' to the allow_privileges setting"


def judge(model: Mapping[str, Any], scope: Scope, policy: Policy,
          stand_ins: Mapping[str, str] | None = None) -> list[Violation]:
    """Every violation of the policy by one stack's resolved model. `stand_ins` (value -> key)
    are the placeholders the model was resolved with, offline."""
    model = dict(model)
    marks = _Marks(stand_ins or {})
    _placeholders = marks.find
    out: list[Violation] = []
    who = "proxy" if scope.is_proxy else f"stack '{scope.stack}'"

    def add(rule: str, service: str, key: str, what: str) -> None:
        if rule != UNRESOLVED and rule != "docker-sock" and policy.waived(scope.stack, rule):
            return
        where = f"{who}, service '{service}'" if service else who
        v = Violation(rule, scope.stack, service, key, f"{where}: {what}", _fix(rule, scope))
        if v not in out:
            out.append(v)

    services = _dict(model.get("services"))
    for name, svc in services.items():
        svc = _dict(svc)
        tainted = {key for key in SENSITIVE - {"ports"} if key in svc
                   and _placeholders(svc[key])}
        if not scope.is_proxy and any(_port_tainted(p, _placeholders) for p in
                                      _list(svc.get("ports"))):
            tainted.add("ports")  # the proxy publishes what it needs
        for key in sorted(tainted):
            names = ", ".join(sorted(_placeholders(svc[key])))
            add(UNRESOLVED, str(name), key, f"`{key}` depends on {names} from an encrypted env "
                "file, whose value is unknown until the host decrypts it")
        for rule in RULES:
            try:
                for key, what in rule.check(str(name), svc, model, scope, policy):
                    if key not in tainted:
                        add(rule.id, str(name), key, what)
            except (RecursionError, TypeError, ValueError):  # deny what cannot be read
                add(rule.id, str(name), "", "has a value of a shape this rule cannot read")
    for kind in ("volumes", "networks", "configs", "secrets"):
        for key, decl in _dict(model.get(kind)).items():
            names = _placeholders(decl) | _placeholders(key)
            if names:
                add(UNRESOLVED, "", f"{kind}.{key}", f"{kind} '{key}' depends on "
                    f"{', '.join(sorted(names))} from an encrypted env file")
    for rule_id, _, _, top in RULES_TOP:
        try:
            for rid, key, what in top(model, scope, policy):
                kind, _, entry = key.partition(".")
                if not _placeholders(_dict(model.get(kind)).get(entry)):
                    add(rid, "", key, what)
        except (RecursionError, TypeError, ValueError):
            add(rule_id, "", "", "has a top-level value of a shape this rule cannot read")
    return out


def unresolved_failure(scope: Scope, keys: Iterable[str], reason: str) -> Violation:
    """compose refuses the model whatever placeholders stand in for the encrypted variables:
    one of them decides a value compose checks (a flag, a port, a path)."""
    who = "proxy" if scope.is_proxy else f"stack '{scope.stack}'"
    return Violation(UNRESOLVED, scope.stack, "", "", (
        f"{who}: docker compose config fails when the values of the encrypted variables "
        f"{', '.join(sorted(keys))} are unknown ({reason})"), _fix(UNRESOLVED, scope))


class _Marks:
    """Finds the placeholders (by value) a part of the model carries."""

    def __init__(self, stand_ins: Mapping[str, str]) -> None:
        self.stand_ins = dict(stand_ins)
        self.pattern = re.compile("|".join(
            re.escape(v) if not v.isdigit() else f"(?<![0-9]){v}(?![0-9])"
            for v in sorted(self.stand_ins, key=len, reverse=True))) if stand_ins else None

    def find(self, value: object) -> set[str]:
        if self.pattern is None:
            return set()
        try:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
        except (RecursionError, ValueError):  # too deep to read: assume the worst
            return set(self.stand_ins.values())
        return {self.stand_ins[m] for m in self.pattern.findall(text)}


def _list(value: object) -> list:
    if isinstance(value, list):
        return value
    return [value] if isinstance(value, str) and value else []


def _keys(value: object) -> Iterable:
    if isinstance(value, dict):
        return list(value)
    if isinstance(value, list):
        return value
    return []


def _show(value: object) -> str:
    """A value for a message: scalars as they are (shortened), anything else by its kind."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = str(value)
        return text if len(text) <= 120 else text[:117] + "..."
    return f"<a {type(value).__name__}>"


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}
