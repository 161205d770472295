"""The Prometheus textfile, read back by prometheus_client's own parser."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from vigo.host import metrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_render_parses_back_with_every_metric() -> None:
    snap = metrics.Snapshot(
        finished=1_700_000_000.25, success=False, duration=3.14159, revision_applied="ab12" * 10,
        consecutive_failures=2, stacks={"whoami": (True, True), 'odd"na\\me': (False, False)})
    got = samples(metrics.render(snap))
    assert got == {
        ("vigo_last_run_timestamp_seconds", ()): 1_700_000_000.25,
        ("vigo_last_run_success", ()): 0,
        ("vigo_last_run_duration_seconds", ()): 3.142,
        ("vigo_applied_revision_info", (("revision", "ab12" * 10),)): 1,
        ("vigo_stack_up", (("stack", "whoami"),)): 1,
        ("vigo_stack_up", (("stack", 'odd"na\\me'),)): 0,
        ("vigo_stack_failed", (("stack", "whoami"),)): 1,
        ("vigo_stack_failed", (("stack", 'odd"na\\me'),)): 0,
        ("vigo_consecutive_failures", ()): 2,
        ("vigo_suspended", ()): 0,
    }
    families = {f.name: f.type for f in text_string_to_metric_families(metrics.render(snap))}
    assert families == dict.fromkeys(
        ["vigo_last_run_timestamp_seconds", "vigo_last_run_success",
         "vigo_last_run_duration_seconds", "vigo_applied_revision_info", "vigo_stack_up",
         "vigo_stack_failed", "vigo_last_run_reason_info", "vigo_stack_reason_info",
         "vigo_consecutive_failures", "vigo_suspended"], "gauge")


def test_no_revision_applied_yet_means_no_info_sample() -> None:
    snap = metrics.Snapshot(1.0, False, 0.0, "", 1, {})
    got = samples(metrics.render(snap))
    assert not any(name == "vigo_applied_revision_info" for name, _ in got)
    assert got[("vigo_last_run_success", ())] == 0


def test_write_is_atomic_and_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "textfile/vigo.prom"
    metrics.write(path, metrics.Snapshot(1.0, True, 1.0, "r", 0, {"a": (True, False)}))
    assert path.stat().st_mode & 0o777 == 0o644  # node_exporter runs as another user
    assert [p.name for p in path.parent.iterdir()] == ["vigo.prom"]  # no temp file left
    assert samples(path.read_text())[("vigo_stack_up", (("stack", "a"),))] == 1


def test_the_named_reasons_are_labels() -> None:
    snap = metrics.Snapshot(1.0, False, 2.0, "r", 1, {"web": (False, True), "db": (True, False)},
                            reason="StackFailed",
                            stack_reasons={"web": "HealthCheckFailed", "db": "Unchanged",
                                           "old": ""})
    got = samples(metrics.render(snap))
    assert got[("vigo_last_run_reason_info", (("reason", "StackFailed"),))] == 1
    assert got[("vigo_stack_reason_info", (("reason", "HealthCheckFailed"), ("stack", "web")))] == 1
    assert got[("vigo_stack_reason_info", (("reason", "Unchanged"), ("stack", "db")))] == 1
    assert not any(name == "vigo_stack_reason_info" and ("stack", "old") in labels
                   for name, labels in got)
