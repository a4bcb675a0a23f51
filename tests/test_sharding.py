"""Sharded state, ZeRO-1 and pmap on 8 simulated CPU devices (measured by tests/sharded_runs.py).

The runs happen in a subprocess, because the device count must be set before jax
is imported and the pytest worker has imported it already. The spec logic of
zero1_shardings and the errors are checked here, on an abstract mesh.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import adam_jax
from tests.conftest import mixed_tree, noisy_quadratic_grad, once_per_session

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-6
FOLLOW_CASES = ['adam/explicit', 'adamw/auto', 'adam_bf16_state/explicit']
STATE_VIEWS = ['eager_init', 'init_of_shape_dtype_structs', 'jit_init_out_shardings', 'after_steps']


def _run_section(section: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    env['JAX_PLATFORMS'] = 'cpu'  # simulated CPU devices even where an accelerator is present
    proc = subprocess.run(
        [sys.executable, '-m', 'tests.sharded_runs', section],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope='session')
def follow(tmp_path_factory):
    return once_per_session(tmp_path_factory, 'sharded_runs_follow', lambda: _run_section('follow'))


@pytest.fixture(scope='session')
def dp(tmp_path_factory):
    return once_per_session(tmp_path_factory, 'sharded_runs_dp', lambda: _run_section('data_parallel'))


@pytest.fixture(scope='session')
def placement(tmp_path_factory):
    return once_per_session(tmp_path_factory, 'sharded_runs_placement', lambda: _run_section('placement'))


def _param_key(state_path: str) -> str:
    """ "[0][0].mu['w']" -> "['w']": the parameter a moment leaf belongs to."""
    return re.search(r'\.(?:mu|nu)(.*)$', state_path).group(1)


def _moment_paths(state: dict) -> list[str]:
    return [k for k in state if re.search(r'\.(mu|nu)\[', k)]


def test_runs_use_eight_devices(follow, dp):
    assert follow['device_count'] == dp['device_count'] == 8


@pytest.mark.parametrize('case', FOLLOW_CASES)
@pytest.mark.parametrize('view', STATE_VIEWS)
def test_state_sharding_equals_param_sharding(follow, case, view):
    out = follow[f'follow/{case}']
    params, state = out['params'], out[view]
    moments = _moment_paths(state)
    assert len(moments) == 2 * len(params) == 8
    for path in moments:
        param = params[_param_key(path)]
        for field in ('type', 'axes', 'devices', 'spec', 'shard_shapes'):
            assert state[path][field] == param[field], (path, field)
    # The step count is replicated on the same mesh (not left on one device).
    (count,) = [k for k in state if k.endswith('.count')]
    assert state[count]['type'] == 'NamedSharding'
    assert state[count]['devices'] == params["['w']"]['devices'] == list(range(8))
    assert state[count]['spec'] == []
    assert len(state[count]['shard_shapes']) == 8


@pytest.mark.parametrize('case', FOLLOW_CASES)
def test_params_keep_their_sharding_through_the_steps(follow, case):
    out = follow[f'follow/{case}']
    assert out['params_after_steps'] == out['params']
    assert out['params']["['w']"]['spec'] == ['data', 'model']
    assert out['params']["['w']"]['shard_shapes'] == [[4, 4]] * 8


@pytest.mark.parametrize('case', FOLLOW_CASES)
def test_state_shardings_helper_follows_params(follow, case):
    out = follow[f'follow/{case}']
    helper, params = out['state_shardings'], out['params']
    for path in _moment_paths(helper):
        assert helper[path]['spec'] == params[_param_key(path)]['spec']
        assert helper[path]['devices'] == params[_param_key(path)]['devices']
    (count,) = [k for k in helper if k.endswith('.count')]
    assert helper[count] == {'spec': [], 'devices': list(range(8))}


@pytest.mark.parametrize('case', [c for c in FOLLOW_CASES if c.endswith('explicit')])
def test_eval_shape_carries_param_shardings(follow, case):
    out = follow[f'follow/{case}']
    shaped, params = out['eval_shape'], out['params']
    assert any(shaped[path] is not None for path in _moment_paths(shaped))  # never vacuous
    for path in _moment_paths(shaped):
        if shaped[path] is None:
            # jax 0.11.2 (on the GPU machine) gives some arrays made inside eval_shape no sharding; the README's
            # recipe is adam_jax.state_shardings(opt, params), tested above. jax 0.10 gives every one.
            assert jax.__version_info__ >= (0, 11), path
            continue
        spec, axes = shaped[path]
        assert spec == params[_param_key(path)]['spec']
        assert axes == ['data', 'model']
    (count,) = [k for k in shaped if k.endswith('.count')]
    assert shaped[count] == [[], ['data', 'model']]  # replicated on the mesh, not unplaced


@pytest.mark.parametrize('case', FOLLOW_CASES)
def test_sharded_step_moves_no_data_between_devices(follow, case):
    # The update is elementwise, so with the state where its parameter is the step needs no collective.
    assert follow[f'follow/{case}']['collectives'] == {
        'all-gather': 0,
        'all-reduce': 0,
        'reduce-scatter': 0,
        'all-to-all': 0,
        'collective-permute': 0,
    }


@pytest.mark.parametrize('case', FOLLOW_CASES)
def test_sharded_steps_compile_once_and_equal_single_device(follow, case):
    out = follow[f'follow/{case}']
    assert out['compiles'] == 1
    assert out['moved'] > 0.1  # 20 steps of lr 1e-2 moved the params
    assert out['max_diff_params'] <= TOL
    assert out['max_diff_state'] <= TOL


def test_bf16_state_shards_hold_half_the_bytes(follow):
    out = follow['follow/adam_bf16_state/explicit']
    for path in _moment_paths(out['after_steps']):
        param_bytes = out['params'][_param_key(path)]['shard_bytes']
        assert out['after_steps'][path]['shard_bytes'] == [b // 2 for b in param_bytes]


# ZeRO-1: mu and nu of w1 (12, 32) split on dim 1 and of w2 (32, 3) on dim 0 into 8 parts;
# b1 (32 elements < min_size=64), b2 (3, indivisible) and the count stay replicated.
ZERO_SHARDS = {"['w1']": ([12, 4], [None, 'data']), "['w2']": ([4, 3], ['data', None])}
FULL = {"['w1']": [12, 32], "['b1']": [32], "['w2']": [32, 3], "['b2']": [3]}


@pytest.mark.parametrize('view', ['after_init', 'after_steps'])
def test_zero1_partitions_moments_eightfold(dp, view):
    state = dp['zero1'][view]
    moments = _moment_paths(state)
    assert len(moments) == 8
    for path in moments:
        key = _param_key(path)
        leaf = state[path]
        if key in ZERO_SHARDS:
            shape, spec = ZERO_SHARDS[key]
            assert leaf['shard_shapes'] == [shape] * 8, path
            assert leaf['spec'] == spec, path
            assert 8 * np.prod(shape) == np.prod(FULL[key])
        else:
            assert leaf['shard_shapes'] == [FULL[key]] * 8, path
    (count,) = [k for k in state if k.endswith('.count')]
    assert state[count]['shard_shapes'] == [[]] * 8


def test_zero1_params_replicated_and_results_equal(dp):
    out = dp['zero1']
    for key, leaf in out['params_after_steps'].items():
        assert leaf['shard_shapes'] == [FULL[key]] * 8
    assert out['compiles'] == 1
    assert out['max_diff_params'] <= TOL
    assert out['max_diff_state'] <= TOL


def test_zero1_step_gathers_the_update(dp):
    # Gradients are reduced over the batch; the update, computed on each device's slice of the moments,
    # is all-gathered for the replicated parameters.
    collectives = dp['zero1']['collectives']
    assert collectives['all-gather'] >= 1
    assert collectives['all-reduce'] + collectives['reduce-scatter'] >= 1


def test_zero1_state_bytes_per_device(dp):
    state = dp['zero1']['after_steps']
    per_device = sum(leaf['shard_bytes'][0] for leaf in state.values())
    # fp32 mu and nu: 2 * 4 bytes * (12*32/8 + 32 + 32*3/8 + 3), plus the int32 count.
    assert per_device == 2 * 4 * (48 + 32 + 12 + 3) + 4
    replicated = 2 * 4 * (12 * 32 + 32 + 32 * 3 + 3) + 4
    assert replicated == 4124 and per_device == 764


def test_pmap_with_pmean_equals_single_device(dp):
    out = dp['pmap']
    assert out['moved'] > 0.01
    assert out['spread_between_devices'] == 0.0
    assert out['max_diff_params'] <= TOL
    assert out['max_diff_state'] <= TOL


# ---------------------------------------------------------------- in-process: spec logic and errors

# Auto axes written out: from jax 0.11 on an AbstractMesh's axes default to Explicit.
MESH = AbstractMesh((8, 2), ('data', 'model'), axis_types=(AxisType.Auto, AxisType.Auto))


def _sds(shape, spec=None, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=None if spec is None else NamedSharding(MESH, spec))


@pytest.mark.parametrize(
    'leaf,min_size,expected',
    [
        (_sds((16, 24)), 0, P(None, 'data')),  # largest divisible dim
        (_sds((24, 16)), 0, P('data')),
        (_sds((24, 12)), 0, P('data')),  # 12 is not divisible by 8
        (_sds((3, 5)), 0, P()),  # nothing divisible
        (_sds(()), 0, P()),  # the step count
        (_sds((64,)), 65, P()),  # below min_size
        (_sds((64,)), 64, P('data')),
        (_sds((32, 64), P(None, 'model')), 0, P('data', 'model')),  # keeps model, 32 vs 64/2: tie -> first
        (_sds((64, 16), P('model')), 0, P(('model', 'data'))),  # 64/2 = 32 > 16: joins model on dim 0
        (_sds((8, 16), P('data')), 0, P('data')),  # already partitioned over the axis
    ],
)
def test_zero1_spec(leaf, min_size, expected):
    assert adam_jax.zero1_shardings({'x': leaf}, MESH, 'data', min_size=min_size)['x'] == NamedSharding(MESH, expected)


def test_zero1_spec_has_one_entry_per_dim_on_explicit_axes():
    # jit hands explicit-axis arrays back with one spec entry per dimension; the helper matches that form.
    mesh = AbstractMesh((8, 2), ('data', 'model'), axis_types=(AxisType.Explicit, AxisType.Explicit))
    shardings = adam_jax.zero1_shardings({'x': _sds((24, 16)), 'y': _sds((3,))}, mesh, 'data', min_size=0)
    assert shardings['x'].spec == P('data', None) != P('data')
    assert shardings['y'].spec == P(None)


def test_zero1_shardings_keeps_the_state_structure():
    params = {'a': jnp.zeros((16, 8)), 'b': jnp.zeros(3)}
    opt = adam_jax.adamw(1e-3)
    abstract = jax.eval_shape(opt.init, params)
    shardings = adam_jax.zero1_shardings(abstract, MESH, 'data', min_size=0)
    assert jax.tree.structure(shardings) == jax.tree.structure(abstract)
    assert shardings[0][0].mu['a'].spec == P('data')
    assert shardings[0][0].nu['b'].spec == P()


def test_zero1_splits_8bit_codes_by_rows_with_their_absmax():
    # Codes split along their largest dim (columns) and absmax by blocks of rows put a block's codes and its scale
    # on different devices: the step then gathered 10 times instead of 2 (8 devices, an MLP; a review measured it).
    quantized = adam_jax.quantization.QuantizedArray
    state = {
        'rows': quantized(_sds((64, 512), dtype=jnp.int8), _sds((128,)), 256),  # 8 rows x 512 per device: 16 blocks
        'cut': quantized(_sds((8, 100), dtype=jnp.int8), _sds((4,)), 256),  # 100 per device: blocks cross devices
    }
    got = adam_jax.zero1_shardings(state, MESH, 'data', min_size=0)
    assert got['rows'].codes.spec == P('data') and got['rows'].absmax.spec == P('data')
    assert got['cut'].codes.spec == P('data') and got['cut'].absmax.spec == P()  # as before: each on its own


def test_zero1_refuses_shardings_where_the_abstract_state_belongs():
    # A tree of shardings (e.g. state_shardings' result) has no shapes: every leaf used to come back replicated.
    mesh = jax.make_mesh((1,), ('data',))
    opt = adam_jax.adam(1e-3)
    params = {'w': jax.device_put(jnp.ones((4, 4)), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))}
    with pytest.raises(TypeError, match=r'zero1_shardings needs the abstract state.*state_shardings\(opt, params\)'):
        adam_jax.zero1_shardings(adam_jax.state_shardings(opt, params), mesh, 'data')


def test_zero1_rejects_an_unknown_axis():
    with pytest.raises(ValueError, match=r"axis must be one of the mesh axes \('data', 'model'\), got 'batch'"):
        adam_jax.zero1_shardings({'x': _sds((8,))}, MESH, 'batch')


def test_state_shardings_on_one_device():
    params = {'a': jnp.zeros((4, 2)), 'b': jnp.zeros(3)}
    opt = adam_jax.adam(1e-3)
    shardings = adam_jax.state_shardings(opt, params)
    assert jax.tree.structure(shardings) == jax.tree.structure(opt.init(params))
    assert all(s == params['a'].sharding for s in jax.tree.leaves(shardings))


def test_state_on_a_committed_device_compiles_once():
    # Params placed on a device explicitly (committed): the count is made there too, so the first
    # step does not hand back a count with a different placement (optax.adam's step compiles twice here).
    params = jax.device_put(mixed_tree(), jax.devices()[0])
    opt = adam_jax.adamw(1e-2, weight_decay=0.1)
    state = opt.init(params)
    assert all(leaf.sharding == params['scale'].sharding for leaf in jax.tree.leaves(state))

    @jax.jit
    def step(params, state, t):
        updates, state = opt.update(noisy_quadratic_grad(params, t), state, params)
        return optax.apply_updates(params, updates), state

    for t in range(3):
        params, state = step(params, state, jnp.float32(t))
    assert step._cache_size() == 1


def test_state_shardings_needs_shardings():
    with pytest.raises(ValueError, match='state_shardings needs params whose leaves carry a sharding'):
        adam_jax.state_shardings(adam_jax.adam(1e-3), {'a': np.zeros(3)})


EIGHT_BIT = {'a': adam_jax.adam(1e-3, mu_dtype='int8', nu_dtype='uint8'), 'f': optax.set_to_zero()}


@pytest.mark.parametrize(
    'opt,sharded',
    [
        (optax.masked(adam_jax.adam(1e-3), {'w': True, 'v': False}), 2),  # mu, nu of w
        (optax.multi_transform(EIGHT_BIT, {'w': 'a', 'v': 'f'}), 4),  # codes and absmax of mu and nu of w
    ],
    ids=['masked', 'multi_transform(8-bit, frozen)'],
)
def test_state_shardings_skips_the_leaves_a_mask_leaves_out(opt, sharded):
    # optax.masked puts a MaskedNode where a leaf is left out; state_shardings used to fail on it.
    params = {'w': _sds((64, 256), P('data')), 'v': _sds((8,), P())}
    shardings = adam_jax.state_shardings(opt, params)
    assert jax.tree.structure(shardings) == jax.tree.structure(jax.eval_shape(opt.init, params))
    assert sum(s.spec == P('data') for s in jax.tree.leaves(shardings)) == sharded


# ---------------------------------------------------------------- 8-bit and factored state, eager init

QUANTIZED_LAYOUTS = ['rows, whole blocks', 'rows and columns', 'columns', 'rows, blocks across shards']


@pytest.mark.parametrize('layout', QUANTIZED_LAYOUTS)
def test_8bit_state_on_explicit_axes_keeps_its_sharding_and_equals_one_device(placement, layout):
    # jax.make_mesh's default axes are explicit: quantizing used to fail to trace there ("This reshape is not
    # supported") for every layout but the first; eager init then a plain donated jit now compiles once.
    out = placement[f'quantized/{layout}']
    assert out['compiles'] == 1
    assert out['equal_single_device']  # params, codes and absmax bitwise, after 20 steps
    param_spec = out['params']["['w']"]['spec']
    for path, where in out['state'].items():
        if path.endswith('.codes'):
            assert where['spec'] == param_spec, path  # codes follow the leaf
        if path.endswith('.absmax'):
            assert where['spec'] == out['state_shardings'][path], path  # split by rows only with whole blocks
    whole_blocks = layout == 'rows, whole blocks'
    assert out['state_shardings']["[0][0].mu['w'].absmax"] == (['data'] if whole_blocks else [None])


EAGER_INIT_CASES = [
    f'{name}/{axes}'
    for name in ('adafactor', 'factored_nu', 'temporal_average', 'skip_nonfinite_8bit', 'adamw_schedule')
    for axes in ('explicit', 'auto')
]


@pytest.mark.parametrize('case', EAGER_INIT_CASES)
def test_eager_init_on_a_mesh_places_every_state_leaf_and_compiles_once(placement, case):
    # adafactor's eager init left its statistics, count and full moments unplaced on device 0; with params and
    # state donated, the first step on explicit axes died in XLA ("Expected aliased input ... to have the same
    # size"). Now every leaf is on the mesh, and the step compiles once and hands every leaf back where it was.
    out = placement[f'eager_init/{case}']
    assert out['compiles'] == 1
    for path, where in out['init'].items():
        assert where['type'] == 'NamedSharding' and where['devices'] == list(range(8)), path
        assert out['after_steps'][path]['spec'] == where['spec'], path


@pytest.mark.parametrize('case', ['adafactor/explicit', 'factored_nu/explicit', 'adafactor/auto'])
def test_factored_statistics_keep_the_mesh_axes_of_the_dims_they_keep(placement, case):
    # e (256, 128) split on dim 1 over 'model': the row statistics (mean over the largest dim, 0) keep dim 1's
    # split, the column statistics (mean over dim 1) are replicated; no gather in the step for them.
    state = placement[f'eager_init/{case}']['after_steps']
    row = next(v for k, v in state.items() if k.endswith(".nu['e'].row"))
    col = next(v for k, v in state.items() if k.endswith(".nu['e'].col"))
    assert row['spec'] == ['model'] and row['shard_shapes'][0] == [64]
    assert col['spec'] == [None] and col['shard_shapes'][0] == [256]
