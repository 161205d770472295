"""Family compose: the shape of a compose file, what vigo owns (project and container names), and
whether its routed services can be promoted without downtime."""

from collections.abc import Iterator

from vigo.core import rollout
from vigo.core.lint.base import WARNING, ComposeFile, Finding, describe, finding, stack_rule
from vigo.core.lint.doc import each_service, key_line, routed

IDS = describe({
    "compose-key": "a compose file has no unknown top-level key (x-* extensions are fine)",
    "service-image": "every service names an image",
    "project-name": "no top-level name: vigo owns the project name",
    "container-name": "no container_name: vigo owns container identity",
    "rollout": "routed services with a healthcheck can run two containers at once (warning)",
})


_TOP_KEYS = frozenset(
    {"version", "name", "services", "networks", "volumes", "secrets", "configs", "include"}
)


@stack_rule
def _structure(cf: ComposeFile) -> Iterator[Finding]:
    for key in cf.doc:
        if str(key) not in _TOP_KEYS and not str(key).startswith("x-"):
            fix = "Remove it, or rename it to an x-* extension if it holds YAML anchors."
            what = f"unknown top-level key '{key}'"
            yield finding(cf, "compose-key", key_line(cf.doc, key), None, what, fix)
    services = cf.doc["services"]
    for name, svc in services.items():
        line = key_line(services, name)
        if not isinstance(svc, dict):
            fix = "Write the service as a mapping with at least `image:`."
            yield finding(cf, "compose-parse", line, name, "the service is not a mapping", fix)
        elif not svc.get("image") and not cf.fragment and "extends" not in svc:
            fix = "Name a pinned registry image, e.g. `image: ghcr.io/org/app:sha-<commit>`."
            yield finding(cf, "service-image", line, name, "the service has no `image:`", fix)


@stack_rule
def _identity(cf: ComposeFile) -> Iterator[Finding]:
    if "name" in cf.doc:
        what = "top-level `name:` overrides the project name vigo gives the stack"
        fix = "Remove `name:`; vigo names the project after the stack folder."
        yield finding(cf, "project-name", key_line(cf.doc, "name"), None, what, fix)
    for name, svc, _ in each_service(cf.doc):
        if "container_name" in svc:
            what = (
                "`container_name` fixes the container's name, which blocks rolling updates "
                "and can collide with other stacks"
            )
            fix = "Remove `container_name`; reach the service by its service name."
            yield finding(cf, "container-name", key_line(svc, "container_name"), name, what, fix)


@stack_rule
def _rollout(cf: ComposeFile) -> Iterator[Finding]:
    """Routed services with a healthcheck are promoted without downtime, unless something
    about them makes two containers at once impossible: say so before it surprises anyone."""
    for name, svc, line in each_service(cf.doc):
        spec = rollout.spec(svc)
        if not spec.test or not routed(svc) or spec.zero_downtime:
            continue
        if spec.blocked_by in rollout.CHOSEN:
            continue
        what = (f"cannot be promoted without downtime: it {spec.blocker}; each promotion "
                "recreates it (requests fail while it restarts)")
        fix = ("Let Traefik publish it instead of host ports, drop container_name, or label it "
               f"`{rollout.LABEL_ROLLOUT}=recreate` to accept the downtime.")
        yield finding(cf, "rollout", line, name, what, fix, severity=WARNING)
