"""Optimizer-state bytes per device: replicated vs ZeRO-1, measured on simulated CPU devices.

    python -m benchmarks.zero1_memory [--devices 8]

For a small transformer-shaped parameter tree, builds the AdamW state on meshes of
1, 2, 4, ... devices, replicated (``state_shardings``) and ZeRO-1 partitioned
(``zero1_shardings``), and prints the bytes that device 0 holds, next to the
arithmetic N(b_theta + b_m + b_v) and N b_theta + N (b_m + b_v) / D.
"""

from __future__ import annotations

import os
import sys

DEVICES = int(sys.argv[sys.argv.index('--devices') + 1]) if '--devices' in sys.argv else 8
os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={DEVICES}'
os.environ['JAX_PLATFORMS'] = 'cpu'

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import adam_jax  # noqa: E402

D_MODEL, D_FF, VOCAB, LAYERS = 256, 1024, 8192, 4


def param_shapes() -> dict:
    layer = {
        'attn_qkv': (D_MODEL, 3 * D_MODEL),
        'attn_out': (D_MODEL, D_MODEL),
        'ff_in': (D_MODEL, D_FF),
        'ff_in_bias': (D_FF,),
        'ff_out': (D_FF, D_MODEL),
        'ff_out_bias': (D_MODEL,),
        'norm_scale': (D_MODEL,),
    }
    return {'embed': (VOCAB, D_MODEL), **{f'layer{i}': dict(layer) for i in range(LAYERS)}}


def bytes_on_device(tree, device) -> int:
    return sum(s.data.nbytes for leaf in jax.tree.leaves(tree) for s in leaf.addressable_shards if s.device == device)


def main() -> None:
    shapes = param_shapes()
    n = sum(int(np.prod(s)) for s in jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple)))
    rows = []
    for label, kwargs, b_m in (
        ('float32', {}, 4),
        ('bfloat16', {'mu_dtype': jnp.bfloat16, 'nu_dtype': jnp.bfloat16}, 2),
    ):
        opt = adam_jax.adamw(1e-3, **kwargs)
        d = 1
        while d <= DEVICES:
            mesh = jax.make_mesh((d,), ('data',), devices=jax.devices()[:d])
            replicated = NamedSharding(mesh, P())
            params = jax.tree.map(
                lambda s, r=replicated: jnp.zeros(s, jnp.float32, device=r),
                shapes,
                is_leaf=lambda x: isinstance(x, tuple),
            )
            dev0 = jax.devices()[0]
            full = jax.jit(opt.init, out_shardings=adam_jax.state_shardings(opt, params))(params)
            zero = jax.jit(
                opt.init, out_shardings=adam_jax.zero1_shardings(jax.eval_shape(opt.init, params), mesh, 'data')
            )(params)
            p_bytes = bytes_on_device(params, dev0)
            rows.append(
                (label, d, p_bytes, bytes_on_device(full, dev0), bytes_on_device(zero, dev0), 4 * n + 2 * b_m * n // d)
            )
            d *= 2
    print(f'AdamW state per device, {n:,} float32 parameters (bytes on device 0)\n')
    header = (
        'moments',
        'D',
        'params',
        'state replicated',
        'state ZeRO-1',
        'params+state ZeRO-1',
        'N b_theta + N (b_m + b_v) / D',
        'saving',
    )
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for label, d, p_bytes, full, zero, formula in rows:
        total = p_bytes + zero
        saving = (p_bytes + full) / total
        print(f'| {label} | {d} | {p_bytes:,} | {full:,} | {zero:,} | {total:,} | {formula:,} | {saving:.2f}x |')


if __name__ == '__main__':
    main()
