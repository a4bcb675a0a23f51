"""adam_jax: Adam-family optimizers composed from small pure optax transforms."""

from adam_jax.aliases import adafactor, adam, adamax, adamw, loshchilov_hutter_adamw
from adam_jax.correction import bias_correct
from adam_jax.decay import decoupled_decay
from adam_jax.factored import Factored, FactoredMoment, scale_by_factored_rms
from adam_jax.memory import StateBytes, state_nbytes
from adam_jax.moments import Moments, MomentsState, scale_by_moments
from adam_jax.normalize import scale_by_rms
from adam_jax.quantization import BlockQuantized, QuantizedArray
from adam_jax.sharding import state_shardings, zero1_shardings

__version__ = '0.1.0'

__all__ = [
    'BlockQuantized',
    'Factored',
    'FactoredMoment',
    'Moments',
    'MomentsState',
    'QuantizedArray',
    'StateBytes',
    'adafactor',
    'adam',
    'adamax',
    'adamw',
    'bias_correct',
    'decoupled_decay',
    'loshchilov_hutter_adamw',
    'scale_by_factored_rms',
    'scale_by_moments',
    'scale_by_rms',
    'state_nbytes',
    'state_shardings',
    'zero1_shardings',
]
