"""Which services can be promoted without downtime, and the healthcheck that lets vigo drain
the old container first. Pure.

Traefik stops routing to a container when its health turns unhealthy; SIGTERM alone is
invisible to it. So vigo runs every rolled service's healthcheck as
`[ ! -e /tmp/vigo-drain ] && <the check>`: touching /tmp/vigo-drain in the old container
drains it before it is stopped (FIELD-NOTES: 0 lost requests in 9 of 9 trials).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from vigo.core.model import Rollout

DRAIN_FILE = "/tmp/vigo-drain"
LABEL_ROLLOUT = "io.vigo.core.rollout"  # "recreate" turns the zero-downtime rollout off
# Why a service is recreated instead of rolled out without downtime (Rollout.blocked_by): the
# codes to compare; Rollout.blocker is the sentence for people.
(RECREATE_LABEL, NOT_ROUTED, NO_HEALTHCHECK, HOST_PORTS, CONTAINER_NAME, REPLICAS,
 NETWORK_MODE) = ("RecreateLabel", "NotRouted", "NoHealthcheck", "HostPorts", "ContainerName",
                  "Replicas", "NetworkMode")
# Blockers the author chose (or that leave the service out of the rollout's reach): no surprise
CHOSEN = frozenset({RECREATE_LABEL, NOT_ROUTED, NO_HEALTHCHECK})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def seconds(value: object, default: float) -> float:
    """A compose duration ("1m30s", "500ms", or nanoseconds as a number) in seconds."""
    if isinstance(value, int | float):
        return float(value) / 1e9 if value > 1e6 else float(value)
    found = _DURATION.findall(str(value or ""))
    return sum(float(n) * _UNIT[u] for n, u in found) if found else default


def _labels(svc: Mapping[str, Any]) -> dict[str, str]:
    labels = svc.get("labels") or {}
    if isinstance(labels, list):
        return dict(str(item).split("=", 1) if "=" in str(item) else (str(item), "")
                    for item in labels)
    return {str(k): str(v) for k, v in labels.items()}


def spec(svc: Mapping[str, Any]) -> Rollout:
    """How a service of a resolved compose model is rolled out."""
    check = svc.get("healthcheck") or {}
    test = check.get("test") or ()
    if isinstance(test, str):
        test = ("CMD-SHELL", test)
    test = tuple(str(t) for t in test)
    if check.get("disable") or test[:1] == ("NONE",):
        test = ()
    interval = seconds(check.get("interval"), 30.0)
    retries = int(check.get("retries") or 3)
    labels = _labels(svc)
    blocker, code = "", ""
    if labels.get(LABEL_ROLLOUT) == "recreate":
        blocker, code = f"label {LABEL_ROLLOUT}=recreate", RECREATE_LABEL
    elif labels.get("traefik.enable", "").lower() != "true":
        blocker, code = "not routed by Traefik", NOT_ROUTED
    elif not test:
        blocker, code = "no healthcheck (Traefik could route to it before it is ready)", \
            NO_HEALTHCHECK
    elif svc.get("ports"):
        blocker, code = "publishes host ports (two containers cannot bind them at once)", \
            HOST_PORTS
    elif svc.get("container_name"):
        blocker, code = "has a fixed container_name", CONTAINER_NAME
    elif int(((svc.get("deploy") or {}).get("replicas")) or svc.get("scale") or 1) != 1:
        blocker, code = "runs more than one replica", REPLICAS
    elif svc.get("network_mode"):
        blocker, code = "uses network_mode", NETWORK_MODE
    return Rollout(test=test, interval=interval, retries=retries, blocker=blocker,
                   blocked_by=code)


def drain_test(test: tuple[str, ...]) -> list[str]:
    """The healthcheck test that fails once the drain file exists."""
    if test[:1] == ("CMD",):
        command = " ".join(shlex.quote(t) for t in test[1:])
    else:  # CMD-SHELL
        command = " ".join(test[1:])
    return ["CMD-SHELL", f"[ ! -e {DRAIN_FILE} ] && {command}"]


def drain_seconds(rollout: Rollout) -> float:
    """How long until Traefik has dropped a drained container: the healthcheck must fail
    `retries` times, then Traefik's event throttle (2 s) and a margin."""
    return rollout.interval * rollout.retries + 3.0
