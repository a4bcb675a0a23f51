"""Data-parallel training of a small Flax model with adam_jax, on one process or several.

Every process runs this script; together they see one global mesh of all their
devices (``jax.distributed``), the batch is split over the ``data`` axis (each
process feeds only its own rows), the parameters are replicated, and the
gradient all-reduce is inserted by ``jax.jit``. With ``--zero1`` the AdamW state
is partitioned over the ``data`` axis (ZeRO stage 1) instead of replicated.

One process, 4 simulated CPU devices::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python examples/distributed_train.py

Two processes with 2 CPU devices each, joined on this machine (CPU collectives
through gloo)::

    export XLA_FLAGS=--xla_force_host_platform_device_count=2
    python examples/distributed_train.py --num-processes 2 --process-id 0 --coordinator 127.0.0.1:7777 &
    python examples/distributed_train.py --num-processes 2 --process-id 1 --coordinator 127.0.0.1:7777

The result (losses, final parameters, bytes of optimizer state per device) is
printed by process 0 as one JSON line, or written to ``--out``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import warnings
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import adam_jax

FEATURES, CLASSES, HIDDEN, SAMPLES = 16, 4, 32, 1024


class MLP(nn.Module):
    hidden: int = HIDDEN
    classes: int = CLASSES

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(self.hidden)(x))
        return nn.Dense(self.classes)(x)


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points around one centre per class, generated (no download)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLASSES, FEATURES)) * 2.0
    y = rng.integers(0, CLASSES, size=SAMPLES)
    x = centres[y] + rng.normal(size=(SAMPLES, FEATURES))
    return x.astype(np.float32), y.astype(np.int32)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except OSError:
        return False


def _gloo_on_address(address: str) -> None:
    """Make gloo listen on ``address`` instead of the address this machine's hostname resolves to.

    jax 0.10 has no public option for it; this uses jax's internal backend factory.
    """
    try:
        from jax._src import distributed, xla_bridge
        from jax._src.lib import _jax

        def cpu_client_factory():
            collectives = _jax.make_gloo_tcp_collectives(
                distributed_client=distributed.global_state.client, hostname=address
            )
            return xla_bridge.make_cpu_client(collectives=collectives)

        xla_bridge.register_backend_factory('cpu', cpu_client_factory, priority=0)
    except (ImportError, AttributeError, TypeError) as e:  # the internals moved: keep gloo's default address
        warnings.warn(f'could not bind gloo to {address} ({e}); it uses the hostname address.', stacklevel=2)


def init_distributed(coordinator: str, num_processes: int, process_id: int, timeout_s: int) -> None:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    host, port = coordinator.rsplit(':', 1)
    bind = None  # jax's default: the coordinator listens on every interface ([::]:port)
    if _is_loopback(host):  # a run on this machine only: listen on 127.0.0.1, gloo too
        bind = f'127.0.0.1:{port}'
        _gloo_on_address('127.0.0.1')
    jax.distributed.initialize(
        coordinator_address=coordinator,
        coordinator_bind_address=bind,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout_s,
    )


def train(steps: int, batch_size: int, learning_rate: float, zero1: bool) -> dict:
    # Auto axes: jit places the step by its in/out shardings. With explicit axes (make_mesh's default), jax 0.11
    # asks every sharded scatter in the loss's gradient for an out_sharding; jax 0.10 did not.
    mesh = jax.make_mesh((jax.device_count(),), ('data',), axis_types=(AxisType.Auto,))
    replicated = NamedSharding(mesh, P())
    rows = NamedSharding(mesh, P('data'))
    if batch_size % jax.device_count():
        raise ValueError(f'batch_size must be a multiple of the {jax.device_count()} devices, got {batch_size}.')

    model = MLP()
    x_all, y_all = make_data()
    # Every process runs the same initialisation (same key); each device gets a copy.
    init = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, FEATURES)))['params'], out_shardings=replicated)
    params = init()
    params_sh = jax.tree.map(lambda _: replicated, params)

    opt = adam_jax.adamw(learning_rate, weight_decay=1e-2)
    if zero1:
        state_sh = adam_jax.zero1_shardings(jax.eval_shape(opt.init, params), mesh, 'data', min_size=64)
    else:
        state_sh = adam_jax.state_shardings(opt, params)
    state = jax.jit(opt.init, out_shardings=state_sh)(params)

    def loss_fn(params, x, y):
        logits = model.apply({'params': params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def train_step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    step = jax.jit(
        train_step,
        in_shardings=(params_sh, state_sh, rows, rows),
        out_shardings=(params_sh, state_sh, replicated),
        donate_argnums=(0, 1),
    )

    # This process's rows of each global batch.
    per_process = batch_size // jax.process_count()
    mine = slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
    losses = []
    for t in range(steps):
        batch = np.arange(t * batch_size, (t + 1) * batch_size) % SAMPLES  # wraps around the data set
        xb, yb = x_all[batch][mine], y_all[batch][mine]
        x = jax.make_array_from_process_local_data(rows, xb, (batch_size, FEATURES))
        y = jax.make_array_from_process_local_data(rows, yb, (batch_size,))
        params, state, loss = step(params, state, x, y)
        losses.append(float(loss.addressable_data(0)))

    local = lambda a: np.asarray(a.addressable_data(0))
    return {
        'process_count': jax.process_count(),
        'device_count': jax.device_count(),
        'zero1': zero1,
        'losses': losses,
        'params': {
            jax.tree_util.keystr(k): local(v).tolist() for k, v in jax.tree_util.tree_flatten_with_path(params)[0]
        },
        'state_bytes_per_device': sum(leaf.addressable_shards[0].data.nbytes for leaf in jax.tree.leaves(state)),
        'param_bytes_per_device': sum(leaf.addressable_shards[0].data.nbytes for leaf in jax.tree.leaves(params)),
        'compiles': step._cache_size(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num-processes', type=int, default=1)
    parser.add_argument('--process-id', type=int, default=0)
    parser.add_argument('--coordinator', default='127.0.0.1:7777', help='host:port of process 0')
    parser.add_argument('--timeout', type=int, default=60, help='seconds to wait for the other processes')
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--learning-rate', type=float, default=1e-2)
    parser.add_argument('--zero1', action='store_true', help='partition the optimizer state over the data axis')
    parser.add_argument('--out', type=Path, help='write the result here (process 0) instead of printing it')
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f'--steps must be a positive integer, got {args.steps}')
    if args.batch_size < 1:
        parser.error(f'--batch-size must be a positive integer, got {args.batch_size}')

    if args.num_processes > 1:
        init_distributed(args.coordinator, args.num_processes, args.process_id, args.timeout)
    if args.batch_size % jax.device_count():
        parser.error(f'--batch-size must be a multiple of the {jax.device_count()} devices, got {args.batch_size}')
    result = train(args.steps, args.batch_size, args.learning_rate, args.zero1)
    if jax.process_index() == 0:
        text = json.dumps(result)
        if args.out is None:
            print(text)
        else:
            args.out.write_text(text)
    if args.num_processes > 1:
        jax.distributed.shutdown()


if __name__ == '__main__':
    main()
