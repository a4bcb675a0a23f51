"""adam_jax: Adam-family optimizers composed from small pure optax transforms."""

from adam_jax.aliases import adam, adamax, adamw, loshchilov_hutter_adamw
from adam_jax.correction import bias_correct
from adam_jax.decay import decoupled_decay
from adam_jax.fused import FusedTransformation
from adam_jax.moments import Moments, MomentsState, scale_by_moments
from adam_jax.normalize import scale_by_rms
from adam_jax.sharding import state_shardings, zero1_shardings
from adam_jax.train_step import make_train_step

__version__ = '0.1.0'

__all__ = [
    'FusedTransformation',
    'Moments',
    'MomentsState',
    'adam',
    'adamax',
    'adamw',
    'bias_correct',
    'decoupled_decay',
    'loshchilov_hutter_adamw',
    'make_train_step',
    'scale_by_moments',
    'scale_by_rms',
    'state_shardings',
    'zero1_shardings',
]
