"""The data that flows through the pipeline: small frozen records (core/records.py), no
behaviour with effects."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vigo.core import reasons
from vigo.core.records import field, record

PROXY = "proxy"

# --- the grammars: one home each (render, lint, config, promote and fleet call these) ---------
# `\Z` and not `$`: a name with a trailing newline is no name, with .match or .fullmatch alike.
STACK_PATTERN = r"[a-z0-9][a-z0-9_-]*"  # a compose project name (and the project_prefix)
STACK_NAME = re.compile(STACK_PATTERN + r"\Z")
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}\Z")  # the `host` setting, hosts/<x>/
SHA_TAG = re.compile(r"sha-[0-9a-fA-F]{7,40}\Z")  # an image tag pinned to a commit
DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")  # an image digest (after the `@`)
STACK_NAME_RULE = ("lowercase letters, digits, '-' and '_', starting with a letter or digit; "
                   "'proxy' is reserved")
# The capabilities a stack may add when the allow_caps setting is not set.
DEFAULT_CAPS = ("NET_BIND_SERVICE", "CHOWN", "SETUID", "SETGID", "DAC_OVERRIDE", "FOWNER", "KILL")


def is_stack_name(name: str) -> bool:
    """A valid name of a stack of stacks/ (compose's project grammar; never the proxy's)."""
    return name != PROXY and bool(STACK_NAME.match(name))


def is_host_name(name: str) -> bool:
    return bool(HOST_NAME.match(name))


def is_pinned_tag(tag: str) -> bool:
    """A tag (`sha-<hex>`) or digest (`sha256:<hex>`) that names one image for good."""
    return bool(SHA_TAG.match(tag) or DIGEST.match(tag))


def located(path: str, line: int | None) -> str:
    """Where a finding is: `path:line`, or `path` when the line is not known."""
    return path + (f":{line}" if line else "")

# The compose file names compose itself looks for, in its order of preference, and the override
# files it would merge on top (vigo refuses those: it passes one file, see render.py).
# (compose v2.40 picks, of several, the first of this list; vigo refuses more than one.)
COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDE_NAMES = ("compose.override.yml", "compose.override.yaml",
                  "docker-compose.override.yml", "docker-compose.override.yaml")

# Labels vigo puts on every container it deploys (through a generated compose override).
LABEL_STACK = "io.vigo.stack"
LABEL_INSTANCE = "io.vigo.instance"
LABEL_MOUNTS = "io.vigo.mounts-hash"
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_CONFIG_HASH = "com.docker.compose.config-hash"


@record(frozen=True)
class Paths:
    """Where a run renders: the real runtime for apply, a private temp dir for plan."""

    runtime: Path
    secrets: Path  # decrypted env files (env/), saved healthy models (good/): tmpfs
    overrides: Path
    manifest: Path

    def good_model(self, project: str) -> Path:
        """The last healthy resolved model of a project, replayed by a rollback."""
        return self.secrets / "good" / f"{project}.json"


@record(frozen=True)
class Stack:
    """One compose project to run: the proxy or stacks/<name>/."""

    name: str
    compose_file: str  # repo-relative path of the compose file
    files: tuple[str, ...]  # repo-relative paths that belong to the stack (its folder)
    env_files: tuple[str, ...]  # repo-relative env files whose variables it may use
    interpolation_env: tuple[str, ...]  # env files given to ${VAR} interpolation, in order
    digests: Mapping[str, str]  # path -> sha256 of its rendered content (env: of ciphertext)
    hash: str  # one digest of everything above: the stack's desired state
    problems: tuple[str, ...] = ()  # render failures: the stack is not applied
    # a swarm stack's placement folders: (node, path inside the folder, sha256) of every file
    # of hosts/<node>/stacks/<name>/ of another host than this one (docs/swarm.md#placement)
    placement: tuple[tuple[str, str, str], ...] = ()

    @property
    def placed_on(self) -> tuple[str, ...]:
        """The nodes its placement folders name (sorted)."""
        return tuple(sorted({node for node, _, _ in self.placement}))

    @property
    def folder(self) -> str:
        return self.compose_file.rsplit("/", 1)[0]


@record(frozen=True)
class DesiredState:
    """The host's rendered tree: repo + hosts/<host>/ overlay, from files only."""

    revision: str
    host: str
    files: Mapping[str, Path]  # repo-relative path -> source file in the checkout
    env_files: Mapping[str, Path]  # env/<x>.env -> source (encrypted) file in the checkout
    stacks: tuple[Stack, ...]
    blocked: frozenset[str] = frozenset()  # paths not copied (their stack failed render)
    warnings: tuple[str, ...] = ()
    has_overlay: bool = False  # hosts/<host>/ holds anything
    overlay_stacks: frozenset[str] = frozenset()  # stacks only hosts/<host>/ has
    error: str = ""  # the tree cannot be rendered (an unreadable stacks/): the run changes nothing
    digests: Mapping[str, str] = field(default_factory=dict)  # files' rel -> sha256 (render's)

    def stack(self, name: str) -> Stack | None:
        by = self.__dict__.get("_by_name")  # built once: a run asks once per stack or more
        if by is None:
            by = {}
            for s in self.stacks:
                by.setdefault(s.name, s)
            object.__setattr__(self, "_by_name", by)
        return by.get(name)


@record(frozen=True)
class Container:
    id: str
    name: str
    stack: str
    instance: str
    project: str
    service: str
    state: str  # running, exited, restarting, created, paused, dead
    status: str  # docker's human status, e.g. "Up 3 minutes (healthy)"
    image: str
    config_hash: str

    @property
    def exit_code(self) -> int | None:
        """The code an exited container ended with, from docker's status "Exited (0) 2s ago"."""
        head, _, rest = self.status.partition("(")
        code = rest.partition(")")[0]
        return int(code) if head.strip() == "Exited" and code.lstrip("-").isdigit() else None

    @property
    def health(self) -> str:
        for word in ("unhealthy", "healthy", "health: starting"):
            if f"({word})" in self.status:
                return word.replace("health: ", "")
        return ""


@record(frozen=True)
class Observed:
    """What the engine runs now, restricted to containers this vigo instance deployed."""

    containers: tuple[Container, ...]

    def stack(self, name: str) -> tuple[Container, ...]:
        by = self.__dict__.get("_by_stack")  # built once: a run asks once per stack or more
        if by is None:
            lists: dict[str, list[Container]] = {}
            for c in self.containers:
                lists.setdefault(c.stack, []).append(c)
            by = {stack: tuple(cs) for stack, cs in lists.items()}
            object.__setattr__(self, "_by_stack", by)
        return by.get(name, ())

    @property
    def stacks(self) -> frozenset[str]:
        return frozenset(c.stack for c in self.containers)


@record(frozen=True)
class Rollout:
    """How one service is replaced: started beside the old container and drained, or
    recreated (with the reason why it cannot be done without downtime)."""

    test: tuple[str, ...] = ()  # the service's healthcheck test as written, () without one
    interval: float = 30.0  # healthcheck interval and retries: how long a drain takes
    retries: int = 3
    blocker: str = ""  # '' when a zero-downtime rollout applies
    blocked_by: str = ""  # the blocker's code (rollout.NOT_ROUTED, ...), to compare

    @property
    def zero_downtime(self) -> bool:
        return not self.blocker


@record(frozen=True)
class Resolved:
    """What `docker compose config` says a stack will run (only for stacks that may change)."""

    services: Mapping[str, str]  # service -> image
    mounts_hash: Mapping[str, str] = field(default_factory=dict)  # service -> digest
    error: str = ""
    rollouts: Mapping[str, Rollout] = field(default_factory=dict)
    health_timeout: int | None = None  # x-vigo.health_timeout of the stack's compose file
    model: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the JSON
    policy: tuple[str, ...] = ()  # policy.judge's violations of the model: the stack is refused
    finishes: frozenset[str] = frozenset()  # services meant to exit (health.meant_to_finish)
    replicas: Mapping[str, int] = field(default_factory=dict)  # service -> count, when not 1
    after: tuple[str, ...] = ()  # x-vigo.after: the stacks that converge before this one
    jobs: tuple[Any, ...] = ()  # x-vigo.jobs: xvigo.Job, in the file's order
    job_hashes: Mapping[str, str] = field(default_factory=dict)  # job -> config hash it gets
    # service -> the config hash compose gives its container with vigo's override, asked at
    # resolve (beside the placeholder `compose config`); {}: not asked, the deploy asks
    config_hashes: Mapping[str, str] = field(default_factory=dict)


CREATE, UPDATE, REMOVE, UNCHANGED, FAIL, KEEP, HOLD = (
    "create", "update", "remove", "unchanged", "fail", "keep", "hold")


@record(frozen=True)
class Options:
    """How a run may deviate from the plain reconcile."""

    allow_empty: bool = False  # prune even when the tree has no stacks
    force: bool = False  # re-apply every stack (decrypt, compose up), changed or not
    allow_rewind: bool = False  # accept an older signed commit or a rewritten history


@record(frozen=True)
class Action:
    stack: str
    kind: str  # one of CREATE UPDATE REMOVE UNCHANGED FAIL KEEP HOLD
    reasons: tuple[str, ...] = ()

    def line(self) -> str:
        why = "; ".join(self.reasons)
        verb = {CREATE: "create", UPDATE: "update", REMOVE: "remove", UNCHANGED: "unchanged",
                FAIL: "failed", KEEP: "kept", HOLD: "held"}[self.kind]
        return f"{self.stack}: {verb}" + (f" ({why})" if why else "")


@record(frozen=True)
class Plan:
    revision: str
    actions: tuple[Action, ...]
    refusal: str = ""  # set when prune was refused (exit 1)

    def by_kind(self, *kinds: str) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.kind in kinds)


@record(frozen=True)
class StackResult:
    stack: str
    action: str
    ok: bool
    message: str  # the one output line
    containers: tuple[Container, ...] = ()  # as the engine shows them right after the action
    hold: bool = False  # a failed deploy: not retried until the stack changes or `vigo retry`
    rolled_back_to: str = ""  # the revision whose healthy state was restored
    jobs: tuple[dict[str, object], ...] = ()  # the release jobs run: service, when, exit, duration
    reason: str = ""  # the named reason (core/reasons.py); '' : derived from the fields above

    def __post_init__(self) -> None:
        if not self.reason:
            object.__setattr__(self, "reason", _derived_reason(self))

    def to_json(self) -> dict[str, object]:
        return {"stack": self.stack, "action": self.action, "ok": self.ok,
                "reason": self.reason, "message": self.message}


def _derived_reason(r: StackResult) -> str:
    """The reason of a result that names none: what its action and fields already say."""
    if r.ok:
        return {REMOVE: reasons.REMOVED, UNCHANGED: reasons.UNCHANGED,
                KEEP: reasons.KEPT}.get(r.action, reasons.APPLIED)
    if r.rolled_back_to:
        return reasons.ROLLED_BACK
    return {REMOVE: reasons.REMOVE_FAILED, HOLD: reasons.HELD}.get(r.action,
                                                                  reasons.DEPLOY_FAILED)


def now() -> str:
    """The time of day as the state file and the reports write it: ISO 8601, UTC, seconds."""
    # datetime.now(UTC).isoformat(timespec="seconds"), without importing datetime (~1.5 ms)
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


@record
class Report:
    """How one `vigo apply` or `vigo plan` ended: what the CLI prints (--json), what the hooks
    (metrics, notifications) and the state file record."""

    command: str
    host: str
    revision: str = ""
    reason: str = reasons.CONVERGED  # the exit code follows from it (reasons.EXIT)
    results: list[StackResult] = field(default_factory=list)
    plan: Plan | None = None
    warnings: list[str] = field(default_factory=list)
    error: str = ""
    started: str = field(default_factory=now)
    duration: float = 0.0

    @property
    def exit_code(self) -> int:
        return reasons.exit_code(self.reason)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def fail(self, reason: str, error: str) -> None:
        """The run failed for `reason` (a run reason of reasons.EXIT), with `error` for people."""
        self.reason, self.error = reason, error

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "command": self.command, "host": self.host, "revision": self.revision,
            "exit_code": self.exit_code, "reason": self.reason, "error": self.error,
            "warnings": self.warnings,
            "started": self.started, "duration": round(self.duration, 3),
            "stacks": [r.to_json() for r in self.results],
        }
        if self.plan is not None:
            out["plan"] = [{"stack": a.stack, "action": a.kind, "reasons": list(a.reasons)}
                           for a in self.plan.actions]
            out["refusal"] = self.plan.refusal
        return out
