"""Constructors that reproduce other libraries' optimizers exactly, built from adam_jax's transforms.

- :mod:`adam_jax.presets.pytorch`: ``torch.optim``'s Adam, AdamW, NAdam, RAdam and Adamax, with
  PyTorch's keyword names, defaults and equations.
"""

from adam_jax.presets import pytorch

__all__ = ['pytorch']
