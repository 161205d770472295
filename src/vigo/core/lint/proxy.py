"""Family proxy: Traefik routing across the stacks of a host (names, Host rules, the proxy network,
label variables) and the proxy's dashboard."""

import re
import shlex
from collections.abc import Iterator

from vigo.core.lint.base import (
    WARNING,
    ComposeFile,
    Finding,
    Place,
    describe,
    finding,
    stack_rule,
    tree_rule,
    who,
)
from vigo.core.lint.doc import (
    INTERP,
    as_mapping,
    as_text,
    each_service,
    key_line,
    labels_of,
    routed,
    truthy,
    undefined,
)

IDS = describe({
    "traefik-router-unique": "Traefik router names are unique across stacks",
    "traefik-service-unique": "Traefik service names are unique across stacks",
    "traefik-host-unique": "Traefik Host(...) rules are unique across stacks",
    "traefik-network": "every routed service is on the proxy network",
    "label-env": "every ${VAR} in a label is defined in the env files or has a default",
    "traefik-dashboard": "the Traefik API is not insecure and the dashboard sits behind a router",
})


_TRAEFIK_NAME = re.compile(r"traefik\.(http|tcp|udp)\.(routers|services)\.([^.]+)\.")


_ROUTER_SERVICE = re.compile(r"traefik\.http\.routers\.[^.]+\.service")


@stack_rule
def _traefik_network(cf: ComposeFile) -> Iterator[Finding]:
    if cf.is_proxy or cf.fragment:
        return
    declared = as_mapping(cf.doc.get("networks"))
    for name, svc, line in each_service(cf.doc):
        if not routed(svc):
            continue
        networks = svc.get("networks")
        if "network_mode" in svc:
            names = []
        elif isinstance(networks, (list, dict)):
            names = [str(n) for n in networks]
        else:
            names = ["default"]
        if not any(_is_proxy_network(declared.get(n), n, cf.proxy_network) for n in names):
            what = (
                "routed by Traefik (traefik.enable=true) but not on the proxy network "
                f"'{cf.proxy_network}', so Traefik cannot reach it"
            )
            fix = (
                "Declare a top-level network with `external: true` and "
                f"`name: {cf.proxy_network}` and attach the service to it."
            )
            yield finding(
                cf, "traefik-network", key_line(svc, "networks") or line, name, what, fix
            )


def _is_proxy_network(decl: object, key: str, proxy_network: str) -> bool:
    if not isinstance(decl, dict):
        return False
    external = decl.get("external")
    if isinstance(external, dict):  # legacy `external: {name: ...}`
        return str(external.get("name", decl.get("name", key))) == proxy_network
    return truthy(external) and str(decl.get("name", key)) == proxy_network


@stack_rule
def _label_env(cf: ComposeFile) -> Iterator[Finding]:
    for name, svc, _ in each_service(cf.doc):
        for key, value, line in labels_of(svc):
            for var in undefined(f"{key}={value}", cf.env_keys):
                if var is None:
                    what = f"label '{key}' has a malformed ${{...}} interpolation"
                    fix = "Write variables as ${NAME} or ${NAME:-default}, and a literal $ as $$."
                else:
                    what = (
                        f"label '{key}' uses ${{{var}}}, which neither env/global.env nor "
                        f"env/{cf.stack}.env defines; compose would substitute an empty string"
                    )
                    fix = f"Define {var} in env/{cf.stack}.env (sops) or write ${{{var}:-default}}."
                yield finding(cf, "label-env", line, name, what, fix)


@stack_rule
def _traefik_dashboard(cf: ComposeFile) -> Iterator[Finding]:
    if not cf.is_proxy:
        return
    behind_router = any(
        _ROUTER_SERVICE.fullmatch(key) and value.strip() == "api@internal"
        for _, svc, _ in each_service(cf.doc)
        if routed(svc)
        for key, value, _ in labels_of(svc)
    )
    for name, svc, line in each_service(cf.doc):
        args = _traefik_args(svc)
        on = {k: v.strip().lower() in ("", "true") for k, v in args.items()}
        where = key_line(svc, "command") or key_line(svc, "environment") or line
        fix = (
            "Serve the dashboard only through a router (service=api@internal) with "
            "authentication, or disable it with --api.dashboard=false."
        )
        if on.get("api.insecure"):
            what = "`--api.insecure` serves the Traefik API and dashboard without authentication"
            yield finding(cf, "traefik-dashboard", where, name, what, fix)
        elif on.get("api.dashboard", on.get("api", False)) and not behind_router:
            what = (
                "the Traefik dashboard is enabled but no router serves it "
                "(no label `traefik.http.routers.<name>.service=api@internal`)"
            )
            yield finding(cf, "traefik-dashboard", where, name, what, fix, WARNING)


def _traefik_args(svc: dict) -> dict[str, str]:
    """Traefik static options from `command` (--a.b=c) and TRAEFIK_A_B environment variables."""
    command = svc.get("command")
    if isinstance(command, str):
        try:
            tokens = shlex.split(command)
        except ValueError:
            tokens = command.split()
    else:
        tokens = [str(t) for t in command] if isinstance(command, list) else []
    args: dict[str, str] = {}
    for token in tokens:
        if token.startswith("--"):
            key, sep, value = token[2:].partition("=")
            args[key.lower()] = value if sep else "true"
    for key, value in _env_pairs(svc.get("environment")):
        if key.startswith("TRAEFIK_API"):
            args.setdefault(key.removeprefix("TRAEFIK_").lower().replace("_", "."), value)
    return args


def _env_pairs(environment: object) -> Iterator[tuple[str, str]]:
    if isinstance(environment, dict):
        for key, value in environment.items():
            yield str(key), as_text(value)
    elif isinstance(environment, list):
        for item in environment:
            key, _, value = str(item).partition("=")
            yield key.strip(), value


def _traefik_facts(files: list[ComposeFile]) -> list:
    """One stack's Traefik names, per compose file: [stack, rel, labels], each label
    [service, line, ident, as interpolated, own variables it waits for, has an undefined
    variable]."""
    out: list = []
    for cf in files:
        labels: list = []
        for name, svc, _ in each_service(cf.doc):
            if not routed(svc):
                continue
            for key, value, line in labels_of(svc):
                for ident in _traefik_idents(key, value):
                    pairs = [_canonical(part, cf) for part in ident]
                    labels.append([
                        name, line, list(ident), [text for text, _ in pairs],
                        sorted({v for _, own in pairs for v in own}),
                        any(var is not None for part in ident
                            for var in undefined(part, cf.env_keys))])
        out.append([cf.stack, cf.rel, labels])
    return out


@tree_rule(_traefik_facts)
def _traefik_unique(stacks: list[list]) -> Iterator[Finding]:
    """Router names, service names and Host(...) rules are global on the host. They are
    compared as interpolation will make them, stack by stack: a variable of env/global.env is
    the same in every stack, one of a stack's own env/<stack>.env may differ from the other
    stacks' (its value is encrypted: the clash then waits for the real values, a warning)."""
    first: dict[tuple[str, ...], Place] = {}
    written: dict[tuple[str, ...], tuple[Place, tuple[str, ...]]] = {}
    reported: set[tuple[tuple[str, ...], str]] = set()
    files = [(Place(stack, rel), labels) for facts in stacks for stack, rel, labels in facts]
    for cf, labels in sorted(files, key=lambda f: (not f[0].is_proxy, f[0].stack, f[0].rel)):
        for name, line, ident_, real_, waits_, undefined_ in labels:
            ident, real, waits = tuple(ident_), tuple(real_), tuple(waits_)
            owner = first.setdefault(real, cf)
            if owner.stack != cf.stack and (ident, cf.stack) not in reported:
                reported.add((ident, cf.stack))
                yield _duplicate(cf, owner, ident, name, line)
                continue
            if undefined_:
                continue  # empty where undefined: label-env says so
            seen, seen_waits = written.setdefault(ident, (cf, waits))
            if seen.stack != cf.stack and (waits or seen_waits) and (
                    ident, cf.stack) not in reported:
                reported.add((ident, cf.stack))
                yield _duplicate(cf, seen, ident, name, line,
                                 tuple(sorted(set(waits) | set(seen_waits))))


def _canonical(text: str, cf: ComposeFile) -> tuple[str, tuple[str, ...]]:
    """`text` as interpolation makes it, as far as that is certain offline, for comparing
    across stacks: a variable of env/global.env becomes a mark shared by every stack, one of
    the stack's own env file a mark of this stack only (returned: the comparison waits for
    its value), an undefined one its default (or nothing)."""
    out, pos, own = [], 0, []
    for m in INTERP.finditer(text):
        out.append(text[pos : m.start()])
        pos = m.end()
        if m["esc"] or m["bad"]:
            out.append("$" if m["esc"] else m.group(0))
            continue
        name, op, arg = m["name"] or m["bare"], m["op"] or "", m["arg"] or ""
        if name not in cf.env_keys:
            out.append(arg if op in (":-", "-") else "")
        elif op in (":+", "+"):
            out.append(arg)
        elif name in cf.stack_keys:
            out.append(f"\0{cf.stack}:{name}\0")
            own.append(name)
        else:
            out.append(f"\0global:{name}\0")
    out.append(text[pos:])
    return "".join(out), tuple(own)


def _traefik_idents(key: str, value: str) -> Iterator[tuple[str, ...]]:
    match = _TRAEFIK_NAME.match(key)
    if not match:
        return
    protocol, kind, name = match.groups()
    yield (kind, protocol, name)
    if kind == "routers" and key == f"traefik.{protocol}.routers.{name}.rule" and "Host(" in value:
        yield ("host", value.strip())


def _duplicate(
    cf: Place,
    owner: Place,
    ident: tuple[str, ...],
    service: str,
    line: int | None,
    waits: tuple[str, ...] = (),
) -> Finding:
    other = f"{who(owner.stack)} ({owner.rel})"
    if waits:  # the same text, made of variables each stack defines for itself
        names = ", ".join(waits)
        why = (
            f"{names} come{'s' if len(waits) == 1 else ''} from each stack's own env file "
            "(encrypted), so they clash only if the values are equal; this waits for the real "
            "values"
        )
        fix = "Make sure the values differ, or name the variable after the stack."
        if ident[0] == "host":
            rule, what = "traefik-host-unique", f"the router rule {ident[1]} is also written"
        else:
            kind, protocol, name = ident
            rule = "traefik-router-unique" if kind == "routers" else "traefik-service-unique"
            what = f"the Traefik {protocol} {kind[:-1]} name '{name}' is also written"
        return finding(cf, rule, line, service, f"{what} by {other}; {why}", fix, WARNING)
    if ident[0] == "host":
        what = f"the router rule {ident[1]} is also used by {other}; Traefik would pick either"
        fix = "Give each stack its own host name (or tell them apart with a path rule)."
        return finding(cf, "traefik-host-unique", line, service, what, fix)
    kind, protocol, name = ident
    rule = "traefik-router-unique" if kind == "routers" else "traefik-service-unique"
    what = (
        f"the Traefik {protocol} {kind[:-1]} name '{name}' is also defined by {other}; "
        "Traefik names are global across stacks"
    )
    fix = f"Rename the {kind[:-1]} in one stack, e.g. prefix it with the stack name."
    return finding(cf, rule, line, service, what, fix)
