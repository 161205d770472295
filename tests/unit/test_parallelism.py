"""How many stacks a commit deploys at once (reconcile.parallelism): a pure table."""

from __future__ import annotations

import pytest

from vigo.host.reconcile import COMPOSE_MB, PARALLEL_MAX, PARALLEL_PER_CPU, parallelism


@pytest.mark.parametrize(("stacks", "engine", "local", "mem", "expected"), [
    (30, 2, 2, 16000, 2 * PARALLEL_PER_CPU),        # this machine: 2 cores
    (30, 1, 1, 16000, PARALLEL_PER_CPU),
    (30, 64, 64, 64000, PARALLEL_MAX),              # a big host: the engine's cap
    (3, 8, 8, 16000, 3),                            # never more than the stacks
    (30, 2, 16, 16000, 2 * PARALLEL_PER_CPU),       # a remote engine on a small host
    (30, 16, 2, 16000, 2 * PARALLEL_PER_CPU),       # compose runs here, on 2 cores
    (30, 0, 2, 16000, 2 * PARALLEL_PER_CPU),        # the engine did not say
    (30, 0, 0, None, PARALLEL_PER_CPU),             # nobody said: one CPU
    (30, 8, 8, 3 * COMPOSE_MB + 10, 3),             # memory is short
    (30, 8, 8, 10, 1),                              # very short: one at a time, never zero
    (0, 2, 2, 16000, 1),
    (30, 4, 4, None, 16),                           # /proc/meminfo unreadable
])
def test_parallelism(stacks: int, engine: int, local: int, mem: int | None,
                     expected: int) -> None:
    assert parallelism(stacks, engine, local, mem) == expected
