"""The fused Adam family: one in-place pass over memory per step on CPU (a C++ kernel through the XLA FFI).

``adam_jax.fused.adam``, ``adamw``, ``nadam``, ``nadamw``, ``adamax``, ``adamaxw``, ``amsgrad``, ``adabelief``,
``radam`` and ``lion`` are the composed optimizers with a ``step`` that applies the update; :func:`status` says whether
the kernel is in use.
"""

from adam_jax.fused._library import available, status
from adam_jax.fused.lion import lion
from adam_jax.fused.optimizer import (
    FusedTransformation,
    GradientParts,
    adabelief,
    adam,
    adamax,
    adamaxw,
    adamw,
    amsgrad,
    nadam,
    nadamw,
    radam,
)

__all__ = [
    'FusedTransformation',
    'GradientParts',
    'adabelief',
    'adam',
    'adamax',
    'adamaxw',
    'adamw',
    'amsgrad',
    'available',
    'lion',
    'nadam',
    'nadamw',
    'radam',
    'status',
]
