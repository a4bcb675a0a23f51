"""adam_jax: Adam-family optimizers composed from small pure optax transforms."""

from adam_jax import presets, problems
from adam_jax.aliases import (
    adabelief,
    adafactor,
    adam,
    adamax,
    adamaxw,
    adamw,
    amsgrad,
    lamb,
    lion,
    loshchilov_hutter_adamw,
    nadam,
    nadamw,
    radam,
)
from adam_jax.averaging import TemporalAverageState, averaged_params, temporal_average
from adam_jax.correction import MaxSecondMomentState, NesterovState, bias_correct, max_second_moment, nesterov_momentum
from adam_jax.decay import DecoupledDecayState, decoupled_decay
from adam_jax.factored import Factored, FactoredMoment, scale_by_factored_rms
from adam_jax.fused import FusedTransformation
from adam_jax.memory import StateBytes, state_nbytes
from adam_jax.moments import Moments, MomentsState, scale_by_moments
from adam_jax.nonfinite import SkipNonfiniteState, skip_nonfinite
from adam_jax.normalize import scale_by_rectified_rms, scale_by_rms
from adam_jax.quantization import BlockQuantized, QuantizedArray
from adam_jax.sharding import state_shardings, zero1_shardings
from adam_jax.sign import SignMomentumState, scale_by_sign_momentum
from adam_jax.train_step import make_train_step
from adam_jax.trust_ratio import trust_ratio

__version__ = '0.1.0'

__all__ = [
    'BlockQuantized',
    'DecoupledDecayState',
    'Factored',
    'FactoredMoment',
    'MaxSecondMomentState',
    'FusedTransformation',
    'Moments',
    'MomentsState',
    'NesterovState',
    'QuantizedArray',
    'SignMomentumState',
    'SkipNonfiniteState',
    'StateBytes',
    'TemporalAverageState',
    'adabelief',
    'adafactor',
    'adam',
    'adamax',
    'adamaxw',
    'adamw',
    'amsgrad',
    'averaged_params',
    'bias_correct',
    'decoupled_decay',
    'lamb',
    'lion',
    'loshchilov_hutter_adamw',
    'make_train_step',
    'max_second_moment',
    'nadam',
    'nadamw',
    'nesterov_momentum',
    'presets',
    'problems',
    'radam',
    'scale_by_factored_rms',
    'scale_by_moments',
    'scale_by_rectified_rms',
    'scale_by_rms',
    'scale_by_sign_momentum',
    'skip_nonfinite',
    'state_nbytes',
    'state_shardings',
    'temporal_average',
    'trust_ratio',
    'zero1_shardings',
]
