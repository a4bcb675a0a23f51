"""Bad input gets a clear error naming the argument, the value and what is allowed."""

from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_jax
from adam_jax import bias_correct, decoupled_decay, fused, presets, scale_by_moments, scale_by_rms


@pytest.mark.parametrize(
    'build,arg,value,allowed',
    [
        (lambda: scale_by_moments(b1=1.0), 'b1', '1.0', '[0.0, 1.0)'),
        (lambda: scale_by_moments(b2=-0.1), 'b2', '-0.1', '[0.0, 1.0)'),
        (lambda: adam_jax.adam(1e-3, b1=1.5), 'b1', '1.5', '[0.0, 1.0)'),
        (lambda: adam_jax.adam(1e-3, b2=1.0), 'b2', '1.0', '[0.0, 1.0)'),
        (lambda: adam_jax.adam(1e-3, eps=-1e-8), 'eps', '-1e-08', '[0.0, inf)'),
        (lambda: adam_jax.adam(1e-3, eps_root=-1.0), 'eps_root', '-1.0', '[0.0, inf)'),
        (lambda: adam_jax.adamw(1e-3, weight_decay=-0.1), 'weight_decay', '-0.1', '[0.0, inf)'),
        (lambda: adam_jax.adamax(1e-3, b2=2.0), 'b2', '2.0', '[0.0, 1.0)'),
        (lambda: adam_jax.adamax(1e-3, eps=-1.0), 'eps', '-1.0', '[0.0, inf)'),  # the caller's name, not max_eps
        (lambda: adam_jax.adamaxw(1e-3, eps=-1.0), 'eps', '-1.0', '[0.0, inf)'),
        (lambda: scale_by_rms(eps=-1.0), 'eps', '-1.0', '[0.0, inf)'),
        (lambda: decoupled_decay(-1.0), 'weight_decay', '-1.0', '[0.0, inf)'),
        (lambda: adam_jax.adam(float('nan')), 'learning_rate', 'nan', '(-inf, inf)'),
        (lambda: adam_jax.adamw(float('inf')), 'learning_rate', 'inf', '(-inf, inf)'),
        (lambda: adam_jax.adam(1e-3, b1=float('nan')), 'b1', 'nan', '[0.0, 1.0)'),
        (lambda: scale_by_moments(belief_eps=1e-8), 'belief_eps', '1e-08', "second_moment='belief'"),
        (lambda: scale_by_moments(second_moment='belief', belief_eps=-1.0), 'belief_eps', '-1.0', '[0.0, inf)'),
        (lambda: adam_jax.adabelief(1e-3, eps_root=-1.0), 'eps_root', '-1.0', '[0.0, inf)'),
        (lambda: adam_jax.radam(1e-3, eps=-1.0), 'eps', '-1.0', '[0.0, inf)'),
        (lambda: adam_jax.lion(1e-3, b2=1.0), 'b2', '1.0', '[0.0, 1.0)'),
        (lambda: adam_jax.nesterov_momentum(-0.1), 'momentum_decay', '-0.1', '[0.0, inf)'),
        (lambda: presets.pytorch.adam(lr=-1.0), 'lr', '-1.0', '[0.0, inf)'),
        (lambda: presets.pytorch.adam(betas=(0.9, 1.0)), 'betas[1]', '1.0', '[0.0, 1.0)'),
        (lambda: presets.pytorch.adamw(betas=(1.5, 0.999)), 'betas[0]', '1.5', '[0.0, 1.0)'),
        (lambda: presets.pytorch.adam(betas=0.9), 'betas', '0.9', 'a pair (beta1, beta2)'),
        (lambda: presets.pytorch.nadam(momentum_decay=-1.0), 'momentum_decay', '-1.0', '[0.0, inf)'),
        (lambda: presets.pytorch.radam(weight_decay=-0.1), 'weight_decay', '-0.1', '[0.0, inf)'),
        (lambda: presets.pytorch.adamax(eps=-1.0), 'eps', '-1.0', '[0.0, inf)'),
        (lambda: adam_jax.adam(1e-3, b1=jnp.asarray(1.5)), 'b1', '1.5', '[0.0, 1.0)'),  # concrete jax array
        (lambda: adam_jax.adam(1e-3, b1=np.float32(1.5)), 'b1', '1.5', '[0.0, 1.0)'),
        (lambda: adam_jax.radam(1e-3, threshold=-1.0), 'threshold', '-1.0', '[4.0, inf)'),
        (lambda: adam_jax.radam(1e-3, threshold=float('inf')), 'threshold', 'inf', '[4.0, inf)'),
        (
            lambda: adam_jax.loshchilov_hutter_adamw(1e-3, schedule_multiplier=float('nan')),
            'schedule_multiplier',
            'nan',
            '(-inf, inf)',
        ),
        (lambda: adam_jax.adafactor(clipping_threshold=0.0), 'clipping_threshold', '0.0', '(0.0, inf)'),
        (lambda: adam_jax.adafactor(weight_decay_rate=-0.1), 'weight_decay_rate', '-0.1', '[0.0, inf)'),
        (lambda: adam_jax.adafactor(decay_rate=float('nan')), 'decay_rate', 'nan', '[0.0, inf)'),
        (lambda: adam_jax.adafactor(decay_offset=-1), 'decay_offset', '-1', '[0.0, inf)'),
        (lambda: adam_jax.adafactor(decay_offset=2.5), 'decay_offset', '2.5', 'whole number'),
        (lambda: adam_jax.adafactor(decay_offset=np.float32(0.5)), 'decay_offset', '0.5', 'whole number'),
        (lambda: adam_jax.adafactor(min_dim_size_to_factor=0), 'min_dim_size_to_factor', '0', 'positive int'),
        (lambda: adam_jax.adam(1e-3, mu_dtype='float8_e4m3fn'), 'mu_dtype', 'float8_e4m3fn', "'int8'"),
        (lambda: adam_jax.adam(1e-3, nu_dtype='int4'), 'nu_dtype', 'int4', 'float'),
        (lambda: adam_jax.lion(1e-3, mu_dtype='int8'), 'mu_dtype', 'int8', 'bfloat16'),
        (lambda: adam_jax.adafactor(momentum=0.9, dtype_momentum='int8'), 'dtype_momentum', 'int8', 'float32'),
        (lambda: adam_jax.BlockQuantized(block_size=2**24 + 1), 'block_size', '16777217', '[1, 16777216]'),
        (lambda: adam_jax.adabelief(1e-3, nu_dtype='uint8'), 'nu_dtype', "'uint8'", "'bfloat16'"),
    ],
)
def test_invalid_hyperparameters_raise_value_error_naming_them(build, arg, value, allowed):
    with pytest.raises(ValueError) as err:
        build()
    message = str(err.value)
    assert message.startswith(arg + ' '), message
    assert value in message and allowed in message, message


@pytest.mark.parametrize(
    'build,arg,text',
    [
        (lambda: adam_jax.adam(1e-3, b1=True), 'b1', 'got the boolean True'),
        (lambda: adam_jax.adam(True), 'learning_rate', 'got the boolean True'),
        (lambda: adam_jax.adamw(1e-3, weight_decay=np.bool_(True)), 'weight_decay', 'boolean'),
        (lambda: adam_jax.temporal_average(True), 'b2', 'boolean'),
        (lambda: adam_jax.adam('abc'), 'learning_rate', "got 'abc' of type str"),
        (lambda: adam_jax.adam(1e-3, eps='1e-8'), 'eps', 'of type str'),
        (lambda: adam_jax.adam(None), 'learning_rate', 'got None'),
        (lambda: presets.pytorch.nadam(momentum_decay=None), 'momentum_decay', 'got None; for NAdam with a constant'),
        (lambda: adam_jax.adam(np.array([1e-3])), 'learning_rate', 'scalar, got an array of shape (1,)'),
        (lambda: adam_jax.adam(1e-3, nu_dtype='banana'), 'nu_dtype', "'uint8'"),
        (lambda: adam_jax.adamw(1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-2), 'mu_dtype', 'got 0.01'),  # a positional slip
        (lambda: adam_jax.BlockQuantized(signed='no'), 'signed', "must be a bool (True or False), got 'no'"),
        # Flags: a string is truthy ('no' used to turn Nesterov on silently) and a number is not a flag.
        (lambda: adam_jax.adam(1e-3, nesterov='no'), 'nesterov', "must be a bool (True or False), got 'no'"),
        (lambda: adam_jax.nadam(1e-3, nesterov='False'), 'nesterov', "got 'False'"),
        (lambda: adam_jax.radam(1e-3, nesterov=1), 'nesterov', 'got 1'),
        (lambda: adam_jax.amsgrad(1e-3, bias_correction_mu='no'), 'bias_correction_mu', "got 'no'"),
        (lambda: adam_jax.adafactor(factored='yes'), 'factored', "got 'yes'"),
        (lambda: adam_jax.scale_by_factored_rms(factored='no'), 'factored', "got 'no'"),
        (lambda: adam_jax.bias_correct(nu=None), 'nu', 'got None'),
        (lambda: adam_jax.scale_by_rms(eps_on_raw_nu='true'), 'eps_on_raw_nu', "got 'true'"),
        (lambda: adam_jax.scale_by_moments(precise_corrections=0), 'precise_corrections', 'got 0'),
        (lambda: presets.pytorch.adam(maximize='no'), 'maximize', "got 'no'"),
        (lambda: presets.pytorch.adam(amsgrad='no'), 'amsgrad', "got 'no'"),
        (lambda: adam_jax.make_train_step(lambda p: 0.0, adam_jax.adam(1e-3), has_aux='no'), 'has_aux', "got 'no'"),
        (lambda: adam_jax.make_train_step(lambda p: 0.0, adam_jax.adam(1e-3), unravel='x'), 'unravel', "got 'x'"),
        # Masks are checked when built, not when first traced (a string is a pytree leaf, not a flag).
        (lambda: fused.adamw(1e-3, mask='abc'), 'mask', "a leaf 'abc' of type str"),
        (lambda: decoupled_decay(0.1, mask={'w': 0.5}), 'mask', 'a leaf 0.5 of type float'),
        (lambda: adam_jax.adafactor(weight_decay_mask='x'), 'weight_decay_mask', 'of type str'),
    ],
)
def test_non_numbers_raise_type_error_naming_the_argument(build, arg, text):
    with pytest.raises(TypeError) as err:
        build()
    message = str(err.value)
    assert message.startswith(arg + ' ') and text in message, message


def test_flags_accept_python_and_numpy_booleans_and_nadam_takes_nesterov_like_optax():
    params = {'w': jnp.array([1.0, -2.0])}
    grads = {'w': jnp.array([0.3, 0.1])}

    def first_update(opt):
        return opt.update(grads, opt.init(params), params)[0]['w']

    for flag in (True, np.bool_(True), np.array(True), jnp.array(True)):
        np.testing.assert_array_equal(
            first_update(adam_jax.adam(1e-2, nesterov=flag)), first_update(adam_jax.nadam(1e-2))
        )
    # optax.nadam is optax.adam with nesterov=True, so it takes the keyword too.
    np.testing.assert_array_equal(first_update(adam_jax.nadam(1e-2, nesterov=False)), first_update(adam_jax.adam(1e-2)))
    np.testing.assert_allclose(
        first_update(adam_jax.nadamw(1e-2, nesterov=True)), first_update(optax.nadamw(1e-2, nesterov=True)), rtol=1e-6
    )
    assert not np.array_equal(first_update(adam_jax.nadam(1e-2)), first_update(adam_jax.adam(1e-2)))


def test_inject_hyperparams_of_adafactor_says_to_keep_its_sizes_static():
    params = {'w': jnp.ones((256, 200))}
    with pytest.raises(ValueError, match=r'min_dim_size_to_factor must be a positive int.*static_args'):
        optax.inject_hyperparams(adam_jax.adafactor)(learning_rate=1e-2).init(params)
    opt = optax.inject_hyperparams(adam_jax.adafactor, static_args=('min_dim_size_to_factor',))(learning_rate=1e-2)
    updates, _ = jax.jit(opt.update)(params, opt.init(params), params)
    assert updates['w'].shape == (256, 200)


def test_numpy_integers_are_sizes():
    assert adam_jax.BlockQuantized(block_size=np.int64(128)).block_size == 128
    assert type(adam_jax.BlockQuantized(block_size=np.int64(128)).block_size) is int
    assert adam_jax.Factored(np.int32(64)).min_dim_size_to_factor == 64


def test_amsgrad_refuses_an_8bit_or_factored_maximum():
    # The running maximum is a float array; it used to be stored as raw uint8 (all zeros), which made AMSGrad
    # plain Adam without a word.
    for nu_dtype in ('uint8', adam_jax.BlockQuantized(signed=False), adam_jax.Factored()):
        with pytest.raises(ValueError, match='max_second_moment.*nu_dtype=.*not supported'):
            adam_jax.amsgrad(1e-3, nu_dtype=nu_dtype)
    with pytest.raises(ValueError, match='max_second_moment'):
        presets.pytorch.adam(amsgrad=True, nu_dtype='uint8')
    adam_jax.amsgrad(1e-3, nu_dtype='bfloat16')  # a float maximum is fine
    # float16 flushes small maxima to 0, as it would v itself (scale_by_moments refuses it for v).
    with pytest.raises(ValueError, match='nu_dtype=float16 cannot hold the second moment'):
        adam_jax.max_second_moment(nu_dtype='float16')


@pytest.mark.parametrize('opt', [adam_jax.lion(1e-3), adam_jax.adafactor(), adam_jax.adam(1e-3)])
def test_integer_and_python_number_params_are_refused_by_name(opt):
    with pytest.raises(TypeError, match=r"the leaf at \['w'\] has dtype int32"):
        opt.init({'w': jnp.ones((3, 4), jnp.int32)})
    with pytest.raises(TypeError, match=r"the leaf at \['s'\] is the Python float 1.0"):
        opt.init({'s': 1.0})


@pytest.mark.parametrize('opt', [adam_jax.adam(1e-3), adam_jax.lion(1e-3), adam_jax.adam(1e-3, mu_dtype='int8')])
def test_gradient_of_another_shape_is_refused_by_path(opt):
    params = {'w': jnp.ones((3, 5000))}
    state = opt.init(params)
    for shape in [(2, 3, 5000), (5000, 3), (1,)]:
        with pytest.raises(ValueError, match=re.escape(f"differ in shape at ['w']: {shape} vs (3, 5000)")):
            opt.update({'w': jnp.ones(shape)}, state, params)


def test_max_eps_of_any_numpy_type_is_refused_without_the_max_moment():
    with pytest.raises(ValueError, match="max_eps is only used with second_moment='max'"):
        scale_by_moments(max_eps=np.float32(0.5))


def test_unknown_second_moment_is_rejected():
    with pytest.raises(
        ValueError, match=re.escape("second_moment must be one of ('square', 'max', 'belief'), got 'cube'")
    ):
        scale_by_moments(second_moment='cube')


def test_traced_hyperparameters_are_not_checked_at_construction():
    # inject_hyperparams passes arrays; they are valid here and must not raise, traced or not.
    opt = optax.inject_hyperparams(adam_jax.adam)(learning_rate=jnp.asarray(1e-3), b1=jnp.asarray(0.9))
    state = jax.jit(opt.init)(jnp.ones(2))
    jax.jit(opt.update)(jnp.ones(2), state, jnp.ones(2))


def test_inject_hyperparams_values_are_checked_when_init_runs_eagerly():
    opt = optax.inject_hyperparams(adam_jax.adam)(learning_rate=1e-3, b2=1.0)
    with pytest.raises(ValueError, match=r'b2 must be in \[0.0, 1.0\)'):
        opt.init(jnp.ones(2))


@pytest.mark.parametrize('transform,name', [(bias_correct(), 'bias_correct'), (scale_by_rms(), 'scale_by_rms')])
def test_moment_stage_transform_without_moments_raises_type_error(transform, name):
    params = {'w': jnp.ones(3)}
    chain = optax.chain(transform, optax.scale_by_learning_rate(1e-3))
    state = chain.init(params)
    with pytest.raises(TypeError, match=f'{name} .*Put scale_by_moments\\(\\) before it'):
        chain.update(params, state, params)


@pytest.mark.parametrize(
    'inside,text',
    [
        (decoupled_decay(0.1), 'decoupled_decay works on a params-shaped tree.*scale_by_rms'),
        # these two gave pytree-structure ValueErrors that blamed the state (found by review)
        (adam_jax.temporal_average(), 'temporal_average works on a params-shaped tree.*last in the chain, after the'),
        (
            adam_jax.scale_by_factored_rms(),
            'scale_by_factored_rms works on.*takes the gradients.*in place of the moment',
        ),
        (adam_jax.scale_by_sign_momentum(), 'scale_by_sign_momentum works on.*takes the gradients.*in place of the'),
        (adam_jax.skip_nonfinite(optax.identity()), 'skip_nonfinite wraps a whole optimizer.*inside the moment stage'),
    ],
    ids=['decoupled_decay', 'temporal_average', 'scale_by_factored_rms', 'scale_by_sign_momentum', 'skip_nonfinite'],
)
def test_params_shaped_transform_given_moments_raises_type_error(inside, text):
    params = {'w': jnp.ones(3)}
    chain = optax.chain(scale_by_moments(), inside, scale_by_rms())
    state = chain.init(params)
    with pytest.raises(TypeError, match=text):
        chain.update(params, state, params)


OURS = r"received the moment stage's Moments value.*go before scale_by_moments\(\).*after scale_by_rms\(\)"


@pytest.mark.parametrize(
    'inside,text',
    [
        (optax.scale(0.5), OURS),
        (optax.clip_by_global_norm(1.0), OURS),
        (optax.clip(0.1), "type <class 'adam_jax.moments.Moments'>"),  # jnp's own message names the type
    ],
    ids=['scale', 'clip_by_global_norm', 'clip'],
)
def test_an_optax_transform_inside_the_moment_stage_raises_type_error(inside, text):
    # Moments is not a pytree: optax.scale(0.5) there used to halve b1 and b2 and make the int32 count 0.5, and
    # the step came out 5.2x too large without an error.
    params = {'w': jnp.ones(2)}
    chain = optax.chain(scale_by_moments(), inside, bias_correct(), scale_by_rms())
    state = chain.init(params)
    # clip_by_global_norm reads .real: a TypeError that is an AttributeError too (so hasattr keeps working).
    with pytest.raises(TypeError, match=text):
        chain.update({'w': jnp.array([3.0, -4.0])}, state, params)
    moments = scale_by_moments().update(params, scale_by_moments().init(params))[0]
    assert not hasattr(moments, 'real') and getattr(moments, 'real', None) is None
    with pytest.raises(AttributeError, match="no attribute 'shape'"):
        getattr(moments, 'shape')  # noqa: B009
    with pytest.raises(AttributeError, match="no attribute 'other'") as error:
        getattr(moments, 'other')  # noqa: B009
    assert not isinstance(error.value, TypeError)  # only an array's attributes mean a transform in the wrong place


def test_skip_nonfinite_around_the_moment_stage_alone_says_to_wrap_the_whole_optimizer():
    params = {'w': jnp.ones(2)}
    opt = optax.chain(adam_jax.skip_nonfinite(scale_by_moments()), bias_correct(), scale_by_rms())
    with pytest.raises(TypeError, match=r'skip_nonfinite wraps a whole optimizer.*skip_nonfinite\(adam_jax.adam'):
        opt.update(params, opt.init(params), params)


def test_moments_answer_hasattr_like_any_object():
    params = {'w': jnp.ones(2)}
    moments, _ = scale_by_moments().update(params, scale_by_moments().init(params), params)
    assert not hasattr(moments, 'shape') and getattr(moments, 'dtype', None) is None
    assert moments.count == 1 and moments.b1 == 0.9  # its own fields as ever


def test_a_chain_that_never_ends_the_moment_stage_raises_type_error():
    params = jnp.ones(2)
    opt = optax.chain(scale_by_moments(), bias_correct(), optax.scale(-1e-2))
    with pytest.raises(TypeError, match=OURS):
        opt.update(params, opt.init(params), params)


def test_two_moment_stages_raise_type_error():
    params = {'w': jnp.ones(3)}
    chain = optax.chain(scale_by_moments(), scale_by_moments())
    state = chain.init(params)
    with pytest.raises(TypeError, match='scale_by_moments must come first'):
        chain.update(params, state, params)


def test_decoupled_decay_without_params_raises():
    opt = adam_jax.adamw(1e-3)
    state = opt.init(jnp.ones(2))
    with pytest.raises(ValueError, match='decoupled_decay needs the params'):
        opt.update(jnp.ones(2), state)


def test_mismatched_gradient_tree_names_the_first_differing_path():
    opt = adam_jax.adam(1e-3)
    state = opt.init({'a': jnp.ones(2), 'b': {'c': jnp.ones(3)}})
    with pytest.raises(ValueError, match=r"different tree structures.*\['b'\]\['d'\]"):
        opt.update({'a': jnp.ones(2), 'b': {'d': jnp.ones(3)}}, state)
    with pytest.raises(ValueError, match=r"different tree structures.*3 vs 2 leaves.*\['b'\]\['e'\]"):
        opt.update({'a': jnp.ones(2), 'b': {'c': jnp.ones(3), 'e': jnp.ones(1)}}, state)


def test_schedule_as_learning_rate_for_loshchilov_hutter_is_refused():
    with pytest.raises(TypeError, match='schedule_multiplier'):
        adam_jax.loshchilov_hutter_adamw(optax.constant_schedule(1e-3))


@pytest.mark.parametrize(
    'build,text',
    [
        (lambda: adam_jax.skip_nonfinite(adam_jax.adam), 'inner must be an optax.GradientTransformation'),
        (lambda: adam_jax.make_train_step(lambda p: 0.0, adam_jax.adam), 'optimizer must be an optax.Gradient'),
        (lambda: adam_jax.make_train_step(None, adam_jax.adam(1e-3)), 'loss_fn must be a function'),
        (lambda: adam_jax.state_nbytes('abc'), "the state holds 'abc' of type str"),
    ],
)
def test_a_factory_or_a_non_state_where_an_object_belongs_is_a_type_error(build, text):
    with pytest.raises(TypeError, match=re.escape(text)):
        build()


@pytest.mark.parametrize(
    'build',
    [
        lambda **kw: adam_jax.adam(1e-3, **kw),
        lambda **kw: fused.adam(1e-3, **kw),
        lambda **kw: fused.nadam(1e-3, **kw),
        lambda **kw: adam_jax.nadam(1e-3, **kw),  # b1 in the look-ahead's powers (found by review)
    ],
)
def test_a_decay_rate_that_rounds_to_one_in_float32_is_refused_where_the_correction_is_formed(build):
    # 1 - b^t is 0 in float32 for such a b: the step was silently 0 (b2) or inf (b1), as in optax.
    params = jnp.ones(4096)
    for arg, value in (('b2', 0.99999999), ('b1', 0.999999999)):
        opt = build(**{arg: value})
        with pytest.raises(
            ValueError, match=rf'{arg}=0\.9+ rounds to 1\.0 in float32.*presets.pytorch, form 1 - beta\^t in double'
        ):
            update = getattr(opt, 'step', None)
            if update is not None:
                update(params, params, opt.init(params))
            else:
                opt.update(params, opt.init(params), params)
    # Where 1 - b^t is formed in double (the PyTorch presets) or not at all (AdaMax's u_t), such a b2 is fine.
    for opt in (presets.pytorch.adam(betas=(0.9, 0.99999999)), adam_jax.adamax(1e-3, b2=0.99999999)):
        updates, _ = opt.update(params, opt.init(params), params)
        np.testing.assert_allclose(np.asarray(updates), -1e-3, rtol=1e-3)
    opt = fused.adamax(1e-3, b2=0.99999999)  # its kernel step forms no 1 - b2^t either
    if fused.available():
        text = jax.jit(opt.step).lower(params, params, opt.init(params)).as_text()
        assert text.count('custom_call @adam_jax_fused_adam(') == 1
    new_params, _ = jax.jit(opt.step)(params, params, opt.init(params))
    np.testing.assert_allclose(np.asarray(new_params), 1 - 1e-3, rtol=1e-6)


def test_masks_of_booleans_and_functions_are_accepted():
    params = {'w': jnp.ones((2, 3)), 'b': jnp.ones(3)}
    grads = jax.tree.map(jnp.ones_like, params)
    masks = (
        {'w': True, 'b': False},
        {'w': np.bool_(True), 'b': jnp.array(False)},
        {'w': 1, 'b': 0},  # optax.masked reads the leaves by truth
        lambda p: {'w': True, 'b': False},
    )
    for mask in masks:
        opt = adam_jax.adamw(1e-2, weight_decay=0.5, mask=mask)
        updates, _ = opt.update(grads, opt.init(params), params)
        # The masked leaf gets Adam's step alone: -lr * 1 / (1 + eps) at step 1; the decayed one lr * 0.5 more.
        np.testing.assert_allclose(updates['b'], -1e-2, rtol=1e-5)  # float32 bias corrections
        np.testing.assert_allclose(updates['w'], -1e-2 * 1.5, rtol=1e-5)


def test_bfloat16_hyperparameters_are_numbers_as_in_optax():
    params = {'w': jnp.linspace(-1.0, 1.0, 6)}
    grads = {'w': jnp.linspace(0.5, -0.2, 6)}
    lr = jnp.asarray(1e-3, jnp.bfloat16)
    ours = adam_jax.adam(lr).update(grads, adam_jax.adam(lr).init(params), params)[0]['w']
    theirs = optax.adam(lr).update(grads, optax.adam(lr).init(params), params)[0]['w']
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    np.testing.assert_allclose(ours, -float(lr) * np.sign(grads['w']), rtol=1e-4)  # step 1: -lr sign(g)
    # bfloat16 cannot hold b2 = 0.999 (it rounds to 1): a clear error where optax's steps are NaN.
    opt = optax.inject_hyperparams(adam_jax.adam, hyperparam_dtype=jnp.bfloat16)(learning_rate=1e-3)
    with pytest.raises(ValueError, match=r'b2 must be in \[0.0, 1.0\).*bfloat16 has 7 mantissa bits.*float32'):
        opt.init(params)


def test_a_complex_mu_dtype_for_real_params_is_kept_and_gives_real_updates_without_warnings():
    # optax's own alias suite asks that mu be stored in the dtype asked for, complex64 for real params included;
    # the update then casts m / (sqrt(v) + eps) back to float32, through its real part (JAX deprecates astype
    # dropping it: a warning now, an error later).
    params = {'r': jnp.linspace(-1.0, 1.0, 8), 'c': jnp.linspace(-1.0, 1.0, 8) * (1 + 1j)}
    grads = jax.tree.map(lambda p: 0.1 * p + 0.05, params)
    opt = adam_jax.adam(1e-2, mu_dtype='complex64')
    state = opt.init(params)
    mu = next(s.mu for s in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, 'mu')) if hasattr(s, 'mu'))
    assert mu['r'].dtype == jnp.complex64 and mu['c'].dtype == jnp.complex64
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        updates, _ = opt.update(grads, state, params)
    assert updates['r'].dtype == jnp.float32
    plain = adam_jax.adam(1e-2)
    np.testing.assert_allclose(updates['r'], plain.update(grads, plain.init(params), params)[0]['r'], rtol=1e-6)


@pytest.mark.parametrize('factored', [True, False])
def test_adafactor_refuses_a_gradient_of_another_shape_by_path(factored):
    params = {'w': jnp.ones((3, 4))}
    opt = adam_jax.adafactor(min_dim_size_to_factor=1, factored=factored)
    state = opt.init(params)
    with pytest.raises(ValueError, match=re.escape("differ in shape at ['w']: (1, 4) vs (3, 4)")):
        opt.update({'w': jnp.ones((1, 4))}, state, params)


@pytest.mark.parametrize('opt', [adam_jax.adamw(1e-3), adam_jax.lamb(1e-3, weight_decay=0.1)])
def test_params_of_another_shape_or_tree_are_refused_where_the_decay_reads_them(opt):
    params = {'w': jnp.ones((3, 4))}
    grads = {'w': jnp.ones((3, 4))}
    state = opt.init(params)
    with pytest.raises(ValueError, match=re.escape("updates and params differ in shape at ['w']: (3, 4) vs (1, 4)")):
        opt.update(grads, state, {'w': jnp.ones((1, 4))})
    with pytest.raises(ValueError, match='updates and params have different tree structures'):
        opt.update(grads, state, {'v': jnp.ones((3, 4))})


def test_the_state_of_another_optimizer_is_refused_by_name():
    params = {'w': jnp.ones(3)}
    with pytest.raises(TypeError, match='scale_by_moments: the state must be the MomentsState that its init returned'):
        adam_jax.adam(1e-3).update(params, optax.adam(1e-3).init(params), params)
