"""Training runs on 8 simulated CPU devices; prints one JSON object for tests/test_sharding.py.

Run as ``python -m tests.sharded_runs follow|data_parallel`` from the repository root. The device count
is forced here, before jax is imported, so that it cannot leak into other tests
(pytest workers import jax first). This script measures; the test asserts.
"""

from __future__ import annotations

import os

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
os.environ['JAX_PLATFORMS'] = 'cpu'

import dataclasses  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import adam_jax  # noqa: E402
from tests.conftest import noisy_quadratic_grad  # noqa: E402

STEPS = 20
COLLECTIVES = ('all-gather', 'all-reduce', 'reduce-scatter', 'all-to-all', 'collective-permute')
OPTIMIZERS = {
    'adam': lambda: adam_jax.adam(1e-2),
    'adamw': lambda: adam_jax.adamw(1e-2, weight_decay=0.1),
    'adam_bf16_state': lambda: adam_jax.adam(1e-2, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16),
}


def describe(x):
    """Where a leaf lives: mesh axes and device ids, the spec padded to one entry per dim, shard shapes."""
    s = x.sharding
    out = {'type': type(s).__name__}
    if isinstance(s, NamedSharding):
        out['axes'] = list(s.mesh.axis_names)
        out['devices'] = [int(d.id) for d in np.ravel(s.mesh.devices)] if hasattr(s.mesh, 'devices') else None
        out['spec'] = padded_spec(s.spec, len(x.shape))
    if isinstance(x, jax.Array):
        out['shard_shapes'] = [list(sh.data.shape) for sh in x.addressable_shards]
        out['shard_bytes'] = [int(sh.data.nbytes) for sh in x.addressable_shards]
    return out


def padded_spec(spec, ndim):
    spec = list(spec) + [None] * (ndim - len(spec))
    return [list(e) if isinstance(e, tuple) else e for e in spec]


def by_path(tree):
    return {jax.tree_util.keystr(k): describe(v) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def max_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


# ---------------------------------------------------------------- 1. state follows the params' sharding


def quadratic_params():
    rng = np.random.default_rng(0)
    return {
        'w': rng.normal(size=(16, 8)).astype(np.float32),
        'b': rng.normal(size=8).astype(np.float32),
        'e': rng.normal(size=(4, 6)).astype(np.float32),
        's': np.float32(rng.normal()),
    }


def quadratic_step(opt):
    def step(params, state, t):
        updates, state = opt.update(noisy_quadratic_grad(params, t), state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def run_steps(step, params, state):
    for t in range(STEPS):
        params, state = step(params, state, jnp.float32(t))
    return params, state


def follow_case(name, axis_type):
    opt = OPTIMIZERS[name]()
    mesh = jax.make_mesh((4, 2), ('data', 'model'), axis_types=(axis_type, axis_type))
    specs = {'w': P('data', 'model'), 'b': P('model'), 'e': P(None, 'model'), 's': P()}
    shardings = {k: NamedSharding(mesh, v) for k, v in specs.items()}
    host = quadratic_params()
    params = jax.device_put(host, shardings)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params)

    state_sh = adam_jax.state_shardings(opt, params)
    shaped = jax.eval_shape(opt.init, abstract)
    out = {
        'params': by_path(params),
        'eager_init': by_path(opt.init(params)),
        'init_of_shape_dtype_structs': by_path(opt.init(abstract)),
        'jit_init_out_shardings': by_path(jax.jit(opt.init, out_shardings=state_sh)(params)),
        'state_shardings': {
            jax.tree_util.keystr(k): {
                'spec': padded_spec(v.spec, len(a.shape)),
                'devices': [int(d.id) for d in np.ravel(v.mesh.devices)],
            }
            for (k, v), a in zip(jax.tree_util.tree_flatten_with_path(state_sh)[0], jax.tree.leaves(shaped))
        },
    }
    if axis_type == AxisType.Explicit:  # only explicit axes put shardings into the abstract values
        out['eval_shape'] = {
            # None where eval_shape gives no sharding (what jax 0.11 does for arrays created inside the function)
            jax.tree_util.keystr(k): None
            if v.sharding is None
            else [padded_spec(v.sharding.spec, len(v.shape)), list(v.sharding.mesh.axis_names)]
            for k, v in jax.tree_util.tree_flatten_with_path(shaped)[0]
        }

    step = quadratic_step(opt)
    params, state = run_steps(step, params, opt.init(params))
    out['after_steps'] = by_path(state)
    out['params_after_steps'] = by_path(params)
    out['compiles'] = step._cache_size()
    hlo = step.lower(params, state, jnp.float32(0)).compile().as_text()
    out['collectives'] = {op: hlo.count(f' {op}(') for op in COLLECTIVES}

    # The same run on one device.
    one = jax.devices()[0]
    ref_params = jax.device_put(host, one)
    ref_params, ref_state = run_steps(quadratic_step(opt), ref_params, opt.init(ref_params))
    out['max_diff_params'] = max_diff(params, ref_params)
    out['max_diff_state'] = max_diff(state, ref_state)
    out['moved'] = max_diff(params, host)
    return out


# ---------------------------------------------------------------- 2. ZeRO-1 and 3. pmap (data parallel)

BATCH, D_IN, D_HID, D_OUT = 64, 12, 32, 3


def mlp_problem():
    rng = np.random.default_rng(1)
    params = {
        'w1': (rng.normal(size=(D_IN, D_HID)) / np.sqrt(D_IN)).astype(np.float32),
        'b1': np.zeros(D_HID, np.float32),
        'w2': (rng.normal(size=(D_HID, D_OUT)) / np.sqrt(D_HID)).astype(np.float32),
        'b2': np.zeros(D_OUT, np.float32),
    }
    x = rng.normal(size=(STEPS, BATCH, D_IN)).astype(np.float32)
    y = rng.integers(0, D_OUT, size=(STEPS, BATCH)).astype(np.int32)
    return params, x, y


def mlp_loss(params, x, y):
    h = jnp.tanh(x @ params['w1'] + params['b1'])
    logits = h @ params['w2'] + params['b2']
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def dp_step(opt):
    def step(params, state, x, y):
        grads = jax.grad(mlp_loss)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def single_device_mlp(opt, host, xs, ys):
    one = jax.devices()[0]
    params = jax.device_put(host, one)
    state = opt.init(params)
    step = jax.jit(dp_step(opt))
    for t in range(STEPS):
        params, state = step(params, state, xs[t], ys[t])
    return params, state


def zero1_case(opt, host, xs, ys):
    mesh = jax.make_mesh((8,), ('data',), axis_types=(AxisType.Auto,))  # as examples/distributed_train.py
    replicated = NamedSharding(mesh, P())
    batch = NamedSharding(mesh, P('data'))
    params = jax.device_put(host, replicated)
    params_sh = jax.tree.map(lambda _: replicated, host)
    state_sh = adam_jax.zero1_shardings(jax.eval_shape(opt.init, params), mesh, 'data', min_size=64)
    state = jax.jit(opt.init, out_shardings=state_sh)(params)
    after_init = by_path(state)
    step = jax.jit(
        dp_step(opt),
        in_shardings=(params_sh, state_sh, batch, batch),
        out_shardings=(params_sh, state_sh),
        donate_argnums=(0, 1),
    )
    for t in range(STEPS):
        params, state = step(params, state, jax.device_put(xs[t], batch), jax.device_put(ys[t], batch))
    hlo = step.lower(params, state, jax.device_put(xs[0], batch), jax.device_put(ys[0], batch)).compile().as_text()
    return (
        params,
        state,
        {
            'after_init': after_init,
            'after_steps': by_path(state),
            'params_after_steps': by_path(params),
            'compiles': step._cache_size(),
            'collectives': {op: hlo.count(f' {op}(') for op in COLLECTIVES},
        },
    )


def pmap_case(opt, host, xs, ys):
    n = jax.device_count()
    stack = lambda tree: jax.tree.map(lambda a: np.broadcast_to(a, (n,) + a.shape), tree)

    @functools.partial(jax.pmap, axis_name='batch', donate_argnums=(0, 1))
    def step(params, state, x, y):
        grads = jax.lax.pmean(jax.grad(mlp_loss)(params, x, y), 'batch')
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = stack(host)
    state = jax.pmap(opt.init)(params)
    for t in range(STEPS):
        params, state = step(params, state, xs[t].reshape(n, -1, D_IN), ys[t].reshape(n, -1))
    replica = lambda i: jax.tree.map(lambda a: np.asarray(a)[i], params)
    spread = max(max_diff(replica(i), replica(0)) for i in range(n))
    return replica(0), jax.tree.map(lambda a: a[0], state), spread


def follow_runs():
    result = {'device_count': jax.device_count()}
    for name, axis_type in (
        ('adam', AxisType.Explicit),
        ('adamw', AxisType.Auto),
        ('adam_bf16_state', AxisType.Explicit),
    ):
        result[f'follow/{name}/{axis_type.name.lower()}'] = follow_case(name, axis_type)
    return result


def data_parallel_runs():
    opt = adam_jax.adamw(1e-2, weight_decay=0.1)
    host, xs, ys = mlp_problem()
    ref_params, ref_state = single_device_mlp(opt, host, xs, ys)
    params, state, info = zero1_case(opt, host, xs, ys)
    info['max_diff_params'] = max_diff(params, ref_params)
    info['max_diff_state'] = max_diff(state, ref_state)
    params, state, spread = pmap_case(opt, host, xs, ys)
    pmap = {
        'max_diff_params': max_diff(params, ref_params),
        'max_diff_state': max_diff(state, ref_state),
        'spread_between_devices': spread,
        'moved': max_diff(params, host),
    }
    return {'device_count': jax.device_count(), 'zero1': info, 'pmap': pmap}


# ---------------------------------------------------------------- 4. 8-bit and factored state, eager init

QUANTIZED_LAYOUTS = {  # (shape, spec): the four ways a leaf's blocks can meet its shards
    'rows, whole blocks': ((64, 256), P('data', None)),
    'rows and columns': ((64, 256), P('data', 'model')),
    'columns': ((256, 128), P(None, 'model')),
    'rows, blocks across shards': ((40, 130), P('data', None)),  # 1300 elements per shard, a partial last block
}
EAGER_INIT_OPTIMIZERS = {
    'adafactor': lambda: adam_jax.adafactor(1e-2),
    'factored_nu': lambda: adam_jax.adam(1e-2, nu_dtype=adam_jax.Factored()),
    'temporal_average': lambda: optax.chain(adam_jax.adam(1e-2), adam_jax.temporal_average(0.999)),
    'skip_nonfinite_8bit': lambda: adam_jax.skip_nonfinite(adam_jax.adam(1e-2, mu_dtype='int8', nu_dtype='uint8')),
    # A schedule's count (optax starts it on the default device: the step compiled twice)
    'adamw_schedule': lambda: adam_jax.adamw(optax.cosine_decay_schedule(1e-2, 100), weight_decay=0.1),
}


def quantized_case(shape, spec):
    """8-bit moments of one leaf on explicit axes (jax.make_mesh's default): eager init, a plain donated jit."""
    mesh = jax.make_mesh((4, 2), ('data', 'model'))
    small = adam_jax.BlockQuantized(min_size=0)
    opt = adam_jax.adam(1e-2, mu_dtype=small, nu_dtype=dataclasses.replace(small, signed=False))
    host = {'w': np.random.default_rng(2).normal(size=shape).astype(np.float32)}
    params = jax.device_put(host, {'w': NamedSharding(mesh, spec)})
    wanted = adam_jax.state_shardings(opt, params)
    step = quadratic_step(opt)
    params, state = run_steps(step, params, opt.init(params))
    ref_params = jax.device_put(host, jax.devices()[0])
    ref = run_steps(quadratic_step(opt), ref_params, opt.init(ref_params))
    pairs = zip(jax.tree.leaves((params, state)), jax.tree.leaves(ref))
    return {
        'compiles': step._cache_size(),
        'state': by_path(state),
        'state_shardings': {
            jax.tree_util.keystr(k): padded_spec(v.spec, 1 if 'absmax' in jax.tree_util.keystr(k) else len(shape))
            for k, v in jax.tree_util.tree_flatten_with_path(wanted)[0]
        },
        'params': by_path(params),
        'equal_single_device': all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in pairs),
    }


def eager_init_case(name, axis_type):
    mesh = jax.make_mesh((4, 2), ('data', 'model'), axis_types=(axis_type, axis_type))
    opt = EAGER_INIT_OPTIMIZERS[name]()
    # specs as jit hands them back: one entry per dim on explicit axes, no trailing None on auto ones
    rows = P('data', None) if axis_type == AxisType.Explicit else P('data')
    specs = {'e': P(None, 'model'), 'b': P('model'), 'w': rows}
    shapes = {'e': (256, 128), 'b': (256,), 'w': (64, 256)}
    host = {k: np.random.default_rng(3).normal(size=shapes[k]).astype(np.float32) for k in shapes}
    params = jax.device_put(host, {k: NamedSharding(mesh, v) for k, v in specs.items()})
    state = opt.init(params)
    out = {'init': by_path(state)}
    step = quadratic_step(opt)  # donates params and state: it crashed on explicit axes with unplaced zeros
    params, state = run_steps(step, params, state)
    out['after_steps'] = by_path(state)
    out['compiles'] = step._cache_size()
    return out


def placement_runs():
    result = {'device_count': jax.device_count()}
    for name, (shape, spec) in QUANTIZED_LAYOUTS.items():
        result[f'quantized/{name}'] = quantized_case(shape, spec)
    for name in EAGER_INIT_OPTIMIZERS:
        for axis_type in (AxisType.Explicit, AxisType.Auto):
            result[f'eager_init/{name}/{axis_type.name.lower()}'] = eager_init_case(name, axis_type)
    return result


SECTIONS = {'follow': follow_runs, 'data_parallel': data_parallel_runs, 'placement': placement_runs}


def main():
    json.dump(SECTIONS[sys.argv[1]](), sys.stdout)


if __name__ == '__main__':
    main()
