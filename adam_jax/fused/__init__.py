"""Fused Adam, AdamW, NAdam(W), AdaMax(W): one in-place pass over memory per step on CPU (a C++ kernel via XLA FFI).

``adam_jax.fused.adam``, ``adamw``, ``nadam``, ``nadamw``, ``adamax`` and ``adamaxw`` are the composed optimizers
with a ``step`` that applies the update; :func:`status` says whether the kernel is in use.
"""

from adam_jax.fused._library import available, status
from adam_jax.fused.optimizer import FusedTransformation, adam, adamax, adamaxw, adamw, nadam, nadamw

__all__ = ['FusedTransformation', 'adam', 'adamax', 'adamaxw', 'adamw', 'available', 'nadam', 'nadamw', 'status']
