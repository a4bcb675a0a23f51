"""Timing several jitted optimizer steps in one process, interleaved so that machine drift hits them alike."""

from __future__ import annotations

import random
import time
from typing import Any

import jax

# Idle time after every timed step: the threads of the runtime that just ran (XLA's intra-op pool, torch's OpenMP
# team) spin for a while after their work before they sleep, and they would take a core from whatever runs next.
PAUSE_S = 0.005


def time_interleaved(
    runs: dict[str, dict[str, Any]], rounds: int, grads: Any, seed: int = 0, back_to_back: int = 0
) -> None:
    """One step of every run per round, ``rounds`` times; appends each step's seconds to ``run['times']``.

    Each run is a dict with ``step(params, state, grads) -> (params, state)`` (jitted, usually donating params and
    state), its current ``params`` and ``state`` (replaced by each step's results) and a list ``times``.
    The order is shuffled every round (seeded): a step that runs right after another pays for what that one
    leaves behind (caches full of its data), and no run should always be the one that follows the same
    neighbour; and every step is followed by a pause of ``PAUSE_S``, so that no step shares the CPU with the
    spinning threads of the one before it. With ``back_to_back=K`` each turn then also issues K steps without
    waiting, waits once, and appends the time per step to ``run['bursts']`` (what a training loop sees where
    dispatch is asynchronous, as on a GPU).
    """
    order = list(runs.values())
    shuffle = random.Random(seed).shuffle
    for _ in range(rounds):
        shuffle(order)
        for run in order:
            start = time.perf_counter()
            run['params'], run['state'] = run['step'](run['params'], run['state'], grads)
            jax.block_until_ready((run['params'], run['state']))
            run['times'].append(time.perf_counter() - start)
            if back_to_back:
                start = time.perf_counter()
                for _ in range(back_to_back):
                    run['params'], run['state'] = run['step'](run['params'], run['state'], grads)
                jax.block_until_ready((run['params'], run['state']))
                run.setdefault('bursts', []).append((time.perf_counter() - start) / back_to_back)
            time.sleep(PAUSE_S)
