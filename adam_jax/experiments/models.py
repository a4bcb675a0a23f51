"""The paper's models, in Flax NNX.

Dropout takes its rate at call time (``dropout``, possibly a traced array) so that one compiled
training step serves a grid of rates; with ``key=None`` the model is deterministic (evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def dropout(x: jax.Array, rate: jax.Array | float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout: zero each unit with probability ``rate``, scale the rest by ``1/(1-rate)``."""
    if key is None:
        return x
    keep = 1.0 - jnp.asarray(rate, x.dtype)
    mask = jax.random.uniform(key, x.shape) < keep
    return jnp.where(mask, x / jnp.maximum(keep, 1e-6), 0.0)


class LogisticRegression(nnx.Module):
    """Multiclass logistic regression on raw pixels (Kingma & Ba 2014, Section 6.1)."""

    def __init__(self, features: int, classes: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(features, classes, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x, *, key=None, dropout_rate=0.0):
        return self.linear(x)


class MLP(nnx.Module):
    """Fully connected ReLU network with dropout on the input and hidden layers (Section 6.2)."""

    def __init__(self, features: int, hidden: Sequence[int], classes: int, *, rngs: nnx.Rngs):
        sizes = [features, *hidden]
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nnx.Linear(sizes[-1], classes, rngs=rngs)

    def __call__(self, x, *, key=None, dropout_rate=0.0):
        keys = [None] * (len(self.hidden) + 1) if key is None else list(jax.random.split(key, len(self.hidden) + 1))
        x = dropout(x, 0.2 * jnp.sign(dropout_rate), keys[0])  # input dropout 0.2 whenever dropout is on
        for layer, k in zip(self.hidden, keys[1:]):
            x = dropout(jax.nn.relu(layer(x)), dropout_rate, k)
        return self.out(x)


class CNN(nnx.Module):
    """c64-c64-c128-1000 (Section 6.3): 5x5 convolutions, ReLU, 3x3 max-pool with stride 2, then a dense layer.

    ``channels`` and ``dense`` default to the paper's sizes; quick runs use narrower ones.
    """

    def __init__(self, channels: Sequence[int] = (64, 64, 128), dense: int = 1000, classes: int = 10, *, rngs):
        sizes = [1, *channels]
        self.convs = nnx.List([nnx.Conv(a, b, (5, 5), rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        side = 28
        for _ in channels:
            side = (side + 1) // 2  # 'SAME' pooling with stride 2
        self.dense = nnx.Linear(side * side * channels[-1], dense, rngs=rngs)
        self.out = nnx.Linear(dense, classes, rngs=rngs)

    def __call__(self, x, *, key=None, dropout_rate=0.0):
        for conv in self.convs:
            x = nnx.max_pool(jax.nn.relu(conv(x)), (3, 3), strides=(2, 2), padding='SAME')
        x = jax.nn.relu(self.dense(x.reshape(x.shape[0], -1)))
        return self.out(dropout(x, dropout_rate, key))


class VAE(nnx.Module):
    """Variational auto-encoder (Kingma & Welling 2013) as in Section 6.4: one hidden layer of softplus units
    in the encoder and in the decoder, a diagonal Gaussian latent and a Bernoulli likelihood."""

    def __init__(self, features: int = 784, hidden: int = 500, latent: int = 50, *, rngs: nnx.Rngs):
        self.enc = nnx.Linear(features, hidden, rngs=rngs)
        self.enc_mean = nnx.Linear(hidden, latent, rngs=rngs)
        self.enc_logvar = nnx.Linear(hidden, latent, rngs=rngs)
        self.dec = nnx.Linear(latent, hidden, rngs=rngs)
        self.dec_out = nnx.Linear(hidden, features, rngs=rngs)

    def negative_elbo(self, x: jax.Array, key: jax.Array) -> jax.Array:
        r"""Mean over the batch of :math:`-\mathbb{E}_q[\log p(x|z)] + KL(q(z|x) \| N(0, I))` (nats)."""
        h = jax.nn.softplus(self.enc(x))
        mean, logvar = self.enc_mean(h), self.enc_logvar(h)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        logits = self.dec_out(jax.nn.softplus(self.dec(z)))
        reconstruction = jnp.sum(jnp.logaddexp(0.0, logits) - x * logits, axis=-1)
        kl = 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)
        return jnp.mean(reconstruction + kl)
