"""Family privileges: what a stack may ask of the host, read from the text (the fallback of
policy.judge, which reads the resolved model: with `resolved` these stand aside)."""

import posixpath
from collections.abc import Iterator

from vigo.core.lint.base import ComposeFile, Finding, describe, finding, stack_rule
from vigo.core.lint.doc import DOCKER_SOCKS, bind_mounts, each_service, item_line, key_line, truthy

IDS = describe({
    "docker-sock": "only the proxy mounts docker.sock, and only read-only",
    "privileged": "no privileged container",
    "host-namespace": "no host pid, ipc, network, userns or uts namespace",
    "devices": "no host devices",
    "cap-add": "added capabilities stay within the allowlist, never ALL",
})


_HOST_NAMESPACES = ("pid", "ipc", "network_mode", "userns_mode", "uts")


@stack_rule
def _privileges(cf: ComposeFile) -> Iterator[Finding]:
    if cf.resolved:
        return
    allowed = {_cap(c) for c in cf.policy.allow_caps}
    for name, svc, _ in each_service(cf.doc):
        if truthy(svc.get("privileged")):
            what = "`privileged: true` gives the container full control of the host"
            fix = "Remove `privileged` and add only the capabilities the service needs."
            yield finding(cf, "privileged", key_line(svc, "privileged"), name, what, fix)
        for key in _HOST_NAMESPACES:
            if str(svc.get(key, "")).strip().lower() == "host":
                what = f"`{key}: host` shares the host's namespace with the container"
                fix = f"Remove `{key}: host`; publish ports or use a compose network instead."
                yield finding(cf, "host-namespace", key_line(svc, key), name, what, fix)
        if svc.get("devices"):
            what = "`devices` passes host devices into the container"
            fix = "Remove `devices`; a device is a decision for the host, not for a stack."
            yield finding(cf, "devices", key_line(svc, "devices"), name, what, fix)
        caps = svc.get("cap_add")
        for i, cap in enumerate(caps if isinstance(caps, list) else []):
            if _cap(cap) == "ALL" or _cap(cap) not in allowed:
                what = f"`cap_add: {cap}` is outside the allowed capabilities"
                what += " (ALL never is)" if _cap(cap) == "ALL" else ""
                fix = "Drop the capability, or add it to the allow_caps setting if it is needed."
                yield finding(cf, "cap-add", item_line(caps, i), name, what, fix)
        for raw, resolved, read_only, mline in bind_mounts(cf, svc):
            if resolved is None or posixpath.normpath(resolved) not in DOCKER_SOCKS:
                continue
            if not cf.is_proxy:
                what = f"mounts the Docker socket '{raw}', which is root on the host"
                fix = "Remove the mount; only the proxy may read the Docker socket."
                yield finding(cf, "docker-sock", mline, name, what, fix)
            elif not read_only:
                what = f"mounts the Docker socket '{raw}' writable"
                fix = "Mount it read-only: append `:ro` or set `read_only: true`."
                yield finding(cf, "docker-sock", mline, name, what, fix)


def _cap(cap: object) -> str:
    return str(cap).strip().upper().removeprefix("CAP_")
