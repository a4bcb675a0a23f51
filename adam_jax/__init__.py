"""adam_jax: Adam-family optimizers composed from small pure optax transforms."""

from adam_jax.aliases import adam, adamax, adamw, loshchilov_hutter_adamw
from adam_jax.averaging import TemporalAverageState, averaged_params, temporal_average
from adam_jax.correction import bias_correct
from adam_jax.decay import decoupled_decay
from adam_jax.moments import Moments, MomentsState, scale_by_moments
from adam_jax.nonfinite import SkipNonfiniteState, skip_nonfinite
from adam_jax.normalize import scale_by_rms
from adam_jax.sharding import state_shardings, zero1_shardings

__version__ = '0.1.0'

__all__ = [
    'Moments',
    'MomentsState',
    'SkipNonfiniteState',
    'TemporalAverageState',
    'adam',
    'adamax',
    'adamw',
    'averaged_params',
    'bias_correct',
    'decoupled_decay',
    'loshchilov_hutter_adamw',
    'scale_by_moments',
    'scale_by_rms',
    'skip_nonfinite',
    'state_shardings',
    'temporal_average',
    'zero1_shardings',
]
