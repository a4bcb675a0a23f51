"""optax's own AliasTest (from the installed optax wheel) run on adam_jax's optimizers.

The test module is imported with its ``alias`` module swapped for a namespace in
which our optimizers replace optax's namesakes; only the test cases for those
optimizers are collected.
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest

import adam_jax

OURS = (
    'adabelief',
    'adafactor',
    'adam',
    'adamax',
    'adamaxw',
    'adamw',
    'amsgrad',
    'lamb',
    'lion',
    'nadam',
    'nadamw',
    'radam',
)


def _load_alias_test():
    import optax._src as optax_src
    import optax._src.alias as optax_alias

    shim = types.ModuleType('adam_jax_alias_shim')
    shim.__dict__.update({k: v for k, v in vars(optax_alias).items() if not k.startswith('__')})
    for name in OURS:
        setattr(shim, name, getattr(adam_jax, name))
    saved = sys.modules.pop('optax._src.alias_test', None)
    optax_src.alias = shim
    sys.modules['optax._src.alias'] = shim
    try:
        module = importlib.import_module('optax._src.alias_test')
    finally:
        optax_src.alias = optax_alias
        sys.modules['optax._src.alias'] = optax_alias
        if saved is not None:
            sys.modules['optax._src.alias_test'] = saved
        else:
            sys.modules.pop('optax._src.alias_test', None)
    assert module.alias is shim
    return module


_alias_test = _load_alias_test()


def _ours(method) -> bool:
    params = getattr(method, '__x_params_repr__', '')
    return any(f"opt_name='{name}'" in params for name in OURS)


_selected = {
    name: getattr(_alias_test.AliasTest, name)
    for name in dir(_alias_test.AliasTest)
    if name.startswith('test') and _ours(getattr(_alias_test.AliasTest, name))
}
# Hide everything else the base class would bring (other optimizers, LBFGS, ...).
_hidden = {name: None for name in dir(_alias_test.AliasTest) if name.startswith('test') and name not in _selected}
OptaxAliasTestOnAdamJax = type('OptaxAliasTestOnAdamJax', (_alias_test.AliasTest,), {**_hidden, **_selected})


def test_the_suite_really_covers_our_optimizers():
    names = ' '.join(getattr(m, '__x_params_repr__', '') for m in _selected.values())
    for name in OURS:
        assert f"opt_name='{name}'" in names
    kinds = {n.rstrip('0123456789') for n in _selected}
    for kind in (
        'test_optimization',
        'test_optimizers_accept_extra_args',
        'test_optimizers_can_be_wrapped_in_inject_hyperparams',
        'test_explicit_dtype',
        'test_preserve_dtype',
        'test_state_shape_dtype_shard_stability',
        'test_gradient_accumulation',
    ):
        assert kind in kinds, kind
    assert _alias_test.alias.adam is adam_jax.adam


if __name__ == '__main__':
    pytest.main([__file__, '-q'])
