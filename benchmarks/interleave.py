"""Timing several jitted optimizer steps in one process, interleaved so that machine drift hits them alike."""

from __future__ import annotations

import time
from typing import Any

import jax


def time_interleaved(runs: dict[str, dict[str, Any]], rounds: int, grads: Any) -> None:
    """One step of every run per round, ``rounds`` times; appends each step's seconds to ``run['times']``.

    Each run is a dict with ``step(params, state, grads) -> (params, state)`` (jitted, usually donating params and
    state), its current ``params`` and ``state`` (replaced by each step's results) and a list ``times``.
    """
    for _ in range(rounds):
        for run in runs.values():
            start = time.perf_counter()
            run['params'], run['state'] = run['step'](run['params'], run['state'], grads)
            jax.block_until_ready((run['params'], run['state']))
            run['times'].append(time.perf_counter() - start)
