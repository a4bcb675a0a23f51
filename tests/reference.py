"""Kingma & Ba (2014) Algorithms 1 and 2, written from the paper in plain NumPy float64.

This is the ground truth the library is checked against; it shares no code with it.
"""

from __future__ import annotations

import numpy as np


def adam_reference(theta0, grad, steps, alpha=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8):
    """Algorithm 1. ``grad(theta, t)`` returns g_t; returns [theta_1, ..., theta_steps]."""
    theta = np.array(theta0, dtype=np.float64)
    m = np.zeros_like(theta)  # 1st moment vector
    v = np.zeros_like(theta)  # 2nd moment vector
    history = []
    for t in range(1, steps + 1):
        g = np.asarray(grad(theta, t), np.float64)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        theta = theta - alpha * m_hat / (np.sqrt(v_hat) + epsilon)
        history.append(theta.copy())
    return history


def adamax_reference(theta0, grad, steps, alpha=2e-3, beta1=0.9, beta2=0.999, epsilon=0.0):
    """Algorithm 2 (AdaMax). The paper has no epsilon; optax and PyTorch add it
    to |g| inside the max, which ``epsilon`` reproduces."""
    theta = np.array(theta0, dtype=np.float64)
    m = np.zeros_like(theta)
    u = np.zeros_like(theta)  # exponentially weighted infinity norm
    history = []
    for t in range(1, steps + 1):
        g = np.asarray(grad(theta, t), np.float64)
        m = beta1 * m + (1 - beta1) * g
        u = np.maximum(beta2 * u, np.abs(g) + epsilon)
        theta = theta - (alpha / (1 - beta1**t)) * m / u
        history.append(theta.copy())
    return history


def amsgrad_reference(theta0, grad, steps, alpha=1e-3, beta1=0.9, beta2=0.999, epsilon=0.0, project=None):
    """Reddi, Kale & Kumar (2018), Algorithm 2 (AMSGrad) with a constant beta1 and no bias correction.

    The paper has no epsilon (``epsilon=0``); ``alpha`` may be a function of t; ``project``
    (default: none) is the projection onto the feasible set."""
    theta = np.array(theta0, dtype=np.float64)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    v_hat = np.zeros_like(theta)  # the running maximum of v
    history = []
    for t in range(1, steps + 1):
        g = np.asarray(grad(theta, t), np.float64)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_hat = np.maximum(v_hat, v)
        alpha_t = alpha(t) if callable(alpha) else alpha
        theta = theta - alpha_t * m / (np.sqrt(v_hat) + epsilon)
        if project is not None:
            theta = project(theta)
        history.append(theta.copy())
    return history
