"""Fused Adam, AdamW, NAdam(W), AdaMax(W), AMSGrad: one in-place pass over memory per step on CPU (C++ via XLA FFI).

``adam_jax.fused.adam``, ``adamw``, ``nadam``, ``nadamw``, ``adamax``, ``adamaxw`` and ``amsgrad`` are the composed
optimizers with a ``step`` that applies the update; :func:`status` says whether the kernel is in use.
"""

from adam_jax.fused._library import available, status
from adam_jax.fused.optimizer import FusedTransformation, adam, adamax, adamaxw, adamw, amsgrad, nadam, nadamw

__all__ = [
    'FusedTransformation',
    'adam',
    'adamax',
    'adamaxw',
    'adamw',
    'amsgrad',
    'available',
    'nadam',
    'nadamw',
    'status',
]
