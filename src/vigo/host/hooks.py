"""Everything around a run of `vigo apply` (by hand, by the timer, or bootstrap's first
apply): one lifecycle (docs/operations.md).

    begin   the suspension gate, then the healthchecks start ping   (Lifecycle.begin)
    run     the reconcile, under the lock                           (Reconciler.apply)
    end     bookkeeping, metrics, notifications, the end ping       (finished, called by
            Reconciler.apply under the lock before it saves the state file)

The hooks take what they need as data (`Run`, a `Report`): they know nothing of the
Reconciler. Nothing here can fail a run: every problem becomes a warning line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from vigo.adapters.compose import Compose, DockerError
from vigo.adapters.run import CommandTimeout, Runner
from vigo.config import Settings
from vigo.core import notify, reasons
from vigo.core.model import Container, Report
from vigo.core.records import record
from vigo.host import engines, state, suspend

if TYPE_CHECKING:
    from vigo.host import metrics

# Exit code of a manual `vigo apply` refused because vigo is suspended (the table: reasons.py).
EXIT_SUSPENDED = reasons.exit_code(reasons.SUSPENDED)


@record(frozen=True)
class Run:
    """What the end of a run hands the hooks: its settings, the masker of its secrets, where
    its lines go, and how to ask the engine what runs (for the metrics)."""

    settings: Settings
    mask: Callable[[str], str]
    emit: Callable[[str], None]
    containers: Callable[[], tuple[Container, ...]]
    # the swarm services' metrics (host/metrics.ServiceSample; () when no stack is on a swarm)
    services: Callable[[], tuple[metrics.ServiceSample, ...]] = tuple


@record
class Lifecycle:
    """One run of `vigo apply`, by hand (`timer=False`), by the timer, or bootstrap's first
    apply: the same gate and pings for all. `send`: http.send unless given."""

    settings: Settings
    out: Callable[[str], None]
    err: Callable[[str], None]
    timer: bool = False
    ignore_suspend: bool = False
    send: Callable[..., str] | None = None

    def begin(self) -> int | None:
        """None to go on with the run, else the exit code to stop with (one line printed)."""
        return before_apply(self.settings, timer=self.timer, ignore_suspend=self.ignore_suspend,
                            out=self.out, err=self.err, send=self.send)

    def run(self, apply: Callable[[], Report]) -> tuple[int, Report | None]:
        """begin, then `apply` (a Reconciler.apply, which calls `finished` at its end): the
        exit code, and the report (None when the gate stopped the run)."""
        stop = self.begin()
        if stop is not None:
            return stop, None
        report = apply()
        return report.exit_code, report


def before_apply(settings: Settings, *, timer: bool, ignore_suspend: bool,
                 out: Callable[[str], None], err: Callable[[str], None],
                 send: Callable[..., str] | None = None) -> int | None:
    """The begin of the lifecycle: None to go on with the run, else the exit code to stop
    with (one line printed). `send`: http.send unless given (imported only when a ping is
    sent)."""
    held = suspend.read(settings.state)
    if held is not None and not ignore_suspend:
        if timer:
            out(f"{held.line()}: nothing done (vigo resume to continue)")
            _write_metrics_suspended(settings, err)
            return 0
        err(f"vigo: {held.line()}: nothing done; run `vigo resume`, or "
            "`vigo apply --ignore-suspend` for this one run")
        return EXIT_SUSPENDED
    if settings.healthchecks_url:
        if send is None:
            from vigo.adapters.http import send
        why = send(*_args(notify.ping_start(settings.healthchecks_url)))
        if why:
            err(f"warning: healthchecks start ping: {why}")
    return None


def finished(run: Run, report: Report, st: state.RunRecord) -> None:
    """The end of the lifecycle, called by Reconciler.apply once the run is over, under the
    lock, before the state file is saved: updates `st` (consecutive failures, what was
    announced, each stack's last failure), writes the metrics file, sends notifications.
    Never raises."""
    crash = sys.exc_info()[1]
    if crash is not None and not isinstance(crash, Exception):
        return  # Ctrl-C or exit: not an outcome to count or announce
    try:
        _finished(run, report, st, crash)
    except Exception as exc:  # a bug here must not turn a good run into a crash
        _warn(run, report, f"after the run: {type(exc).__name__}: {exc}")


def _warn(run: Run, report: Report, text: str) -> None:
    text = run.mask(text)
    report.warnings.append(text)
    run.emit(f"warning: {text}")


def _finished(run: Run, report: Report, st: state.RunRecord,
              crash: BaseException | None) -> None:
    s = run.settings
    mask = run.mask
    ok = report.exit_code == 0 and crash is None
    error = report.error or (f"vigo stopped: {type(crash).__name__}: {crash}" if crash else "")
    before = st.count_run(ok)
    for entry in st.stacks.values():
        entry.note_failure(st.started)

    if s.metrics_file is not None:
        from vigo.host import metrics

        try:
            containers: tuple[Container, ...] | None = _containers(run)
        except (DockerError, CommandTimeout) as exc:
            _warn(run, report, f"metrics: {exc}; every stack counted as down")
            containers = None
        try:
            services = run.services()
        except (DockerError, CommandTimeout) as exc:
            _warn(run, report, f"metrics: the swarm: {exc}; its services are left out")
            services = ()
        try:
            metrics.write(s.metrics_file,
                          _snapshot(st, time.time(), ok, report.duration, containers,
                                    services=services))
        except OSError as exc:
            _warn(run, report, f"metrics: cannot write {s.metrics_file}: {exc}")

    status = notify.OK if ok else notify.FAILED
    failed = tuple((r.stack, mask(r.message)) for r in report.results if not r.ok)
    codes = tuple(r.reason for r in report.results if not r.ok)
    code = report.reason if crash is None else reasons.CRASHED
    if s.healthchecks_url:
        from vigo.adapters import http

        summary = (f"{s.host}: {report.error or 'converged'} at {report.revision[:12]}"
                   if ok else
                   notify.Event(notify.FAILURE, s.host, report.revision, report.exit_code,
                                mask(error), failed, st.consecutive_failures,
                                report.started, report.duration, code, codes).text)
        why = http.send(*_args(notify.ping_end(s.healthchecks_url, ok, mask(summary))))
        if why:
            _warn(run, report, f"healthchecks ping: {why}")
    kind = notify.pending(st.announced, status)
    channels = [(name, url) for name, url in (("webhook", s.notify_webhook),
                                              ("ntfy", s.notify_ntfy)) if url]
    if kind is None or not channels:
        st.announce(status)
        return
    event = notify.Event(kind, s.host, report.revision, report.exit_code, mask(error), failed,
                         before if kind == notify.RECOVERY else st.consecutive_failures,
                         report.started, report.duration, code, codes)
    from vigo.adapters import http

    requests = [notify.webhook(url, event) if name == "webhook" else notify.ntfy(url, event)
                for name, url in channels]
    results = notify.deliver(requests, http.send)
    for channel, why in results.items():
        if why:
            _warn(run, report, f"notify {channel}: {why}")
    if any(not why for why in results.values()):
        st.announce(status)  # else the next run tries again
        run.emit(f"notified ({', '.join(c for c, w in results.items() if not w)}): "
                        f"{event.title}")


def _args(r: notify.Request) -> tuple[str, str, bytes | None, dict[str, str]]:
    return r.method, r.url, r.body, r.headers


def _containers(run: Run) -> tuple[Container, ...]:
    return engines.mine(run.containers(), run.settings.project_prefix)


def stack_up(containers: tuple[Container, ...]) -> bool:
    return bool(containers) and all(c.state == "running" and c.health != "unhealthy"
                                    for c in containers)


def _snapshot(st: state.RunRecord, finished: float, ok: bool, duration: float,
              containers: tuple[Container, ...] | None, suspended: bool = False,
              services: tuple[metrics.ServiceSample, ...] = ()) -> metrics.Snapshot:
    from vigo.host import metrics

    records = st.stacks
    names = set(records) | {c.stack for c in containers or ()} | {x.stack for x in services}
    on_swarm = {x.stack for x in services}  # up: every service runs all the tasks it wants
    stacks = {n: (all(x.up for x in services if x.stack == n) if n in on_swarm else
                  containers is not None and stack_up(tuple(c for c in containers
                                                            if c.stack == n)),
                  n in records and records[n].failing)
              for n in names}
    return metrics.Snapshot(finished, ok, duration, st.revision_applied,
                            st.consecutive_failures, stacks, suspended,
                            jobs=metrics.jobs_of(records),
                            reason=st.reason,
                            stack_reasons={n: r.code for n, r in records.items()},
                            services=tuple(services))


def _write_metrics_suspended(settings: Settings, err: Callable[[str], None]) -> None:
    """A suspended timer run refreshes the metrics file (vigo_suspended 1) from the state
    file, so a dashboard tells "suspended" from "stopped running"."""
    if settings.metrics_file is None:
        return
    from datetime import datetime  # here: an idle run's end imports no datetime

    from vigo.host import metrics

    st, _ = state.load(settings.state)
    try:
        finished = datetime.fromisoformat(st.finished).timestamp()
    except ValueError:
        finished = 0.0  # no run finished yet
    try:
        containers: tuple[Container, ...] | None = engines.mine(Compose(Runner()).containers(),
                                                                settings.project_prefix)
    except (DockerError, CommandTimeout):
        containers = None
    snap = _snapshot(st, finished, st.exit_code == 0, st.duration, containers, suspended=True)
    try:
        metrics.write(settings.metrics_file, snap)
    except OSError as exc:
        err(f"warning: metrics: cannot write {settings.metrics_file}: {exc}")
