"""SIGTERM ends a run in seconds: every wait of every thread ends, and no new command starts."""

from __future__ import annotations

import threading
import time

import pytest

from vigo.adapters.run import STOP, Interrupted, Runner, pause


@pytest.fixture(autouse=True)
def _clear_stop():
    STOP.clear()
    yield
    STOP.clear()


def test_a_wait_in_another_thread_ends_when_vigo_is_told_to_stop() -> None:
    ended: list[object] = []

    def wait() -> None:
        try:
            pause(30)
            ended.append("slept")
        except Interrupted as exc:
            ended.append(exc)

    worker = threading.Thread(target=wait)
    t0 = time.monotonic()
    worker.start()
    STOP.set()
    worker.join(10)
    assert not worker.is_alive() and isinstance(ended[0], Interrupted)
    assert time.monotonic() - t0 < 10  # the 30 s wait did not run out (bounded by the join)


def test_no_command_starts_once_vigo_is_told_to_stop() -> None:
    STOP.set()
    with pytest.raises(Interrupted, match="before"):
        Runner().run(["true"])


def test_pause_sleeps_when_nothing_stops_it() -> None:
    t0 = time.monotonic()
    pause(0.05)
    assert time.monotonic() - t0 >= 0.05
