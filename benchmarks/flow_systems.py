"""The systems compared in the flow benchmark (K): one training step of a
normalizing-flow family on Neal's funnel in ``DIMENSION`` dimensions
(v ~ N(0, 3), x_i ~ N(0, exp(v / 2))), the ELBO averaged over ``DRAWS``
draws, ``optax.adam(LEARNING_RATE)``.

The flow: ``LAYERS`` affine coupling layers (RealNVP), each conditioner an
MLP with two tanh hidden layers of ``HIDDEN`` units, log scales bounded by
3 tanh(raw / 3), over a standard normal base. ppl builds it with
``vi.flow(funnel, ..., layers=[partial(vi.AffineCoupling, ...)] * LAYERS)``
and trains it with ``vi.averaged(vi.elbo(...), DRAWS)``; the hand-written
system is the same computation in plain JAX on plain arrays, starting from
the same weights (copied out of ppl's initial flow).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import ppl
from ppl import dist
from ppl.inference import vi

__all__ = ["DIMENSION", "LAYERS", "HIDDEN", "DRAWS", "funnel", "make_guide", "make_ppl_step", "make_hand_step",
           "hand_params", "funnel_log_density"]

DIMENSION, LAYERS, HIDDEN, DRAWS = 10, 4, 64, 256
LEARNING_RATE = 1e-3
SCALE_BOUND = 3.0


@ppl.gen
def funnel(params):
    v = ppl.sample("v", dist.Normal(0.0, 3.0))
    ppl.sample("x", dist.Normal(0.0, jnp.exp(v / 2)).expand([DIMENSION - 1]))


def make_guide(layer=None, num_layers=LAYERS):
    layer = layer or functools.partial(vi.AffineCoupling, hidden_sizes=(HIDDEN, HIDDEN), scale_bound=SCALE_BOUND)
    return vi.flow(funnel, (None,), {}, layers=[layer] * num_layers)


def initial_flow(guide, seed=0):
    """ppl's initial flow, moved off the identity (so every system computes
    something non-trivial from the first step)."""
    flow = guide.init_flow(jax.random.key(seed))
    graph, state = nnx.split(flow)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [leaf + 0.05 * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
    return nnx.merge(graph, jax.tree.unflatten(tree, leaves))


def make_ppl_step(guide, flow, objective=None):
    """``(step, state)``: ``step(state) -> (state, loss)``, one optimiser step."""
    objective = objective or vi.averaged(vi.elbo(funnel, guide), DRAWS)
    optimizer = optax.adam(LEARNING_RATE)
    params = {"guide": flow}

    def step(state):
        params, opt_state, key = state
        key, sub = jax.random.split(key)
        value, grads = objective.value_and_grad_estimate(sub, params, {})
        updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, grads), opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), -value

    return step, (params, optimizer.init(params), jax.random.key(0))


# ----- hand-written JAX -----------------------------------------------------------


def hand_params(flow):
    """The flow's weights as plain arrays: per layer, the (kernel, bias) of each
    conditioner layer, last the output layer."""
    return [
        [(l.kernel[...], l.bias[...]) for l in layer.conditioner.hidden] + [(layer.conditioner.out.kernel[...], layer.conditioner.out.bias[...])]
        for layer in flow.layers
    ]


def _conditioner(weights, inputs):
    for kernel, bias in weights[:-1]:
        inputs = jnp.tanh(inputs @ kernel + bias)
    kernel, bias = weights[-1]
    return inputs @ kernel + bias


def _coupling(weights, index, x):
    parity = np.arange(DIMENSION) % 2 == index % 2
    kept, moved = np.flatnonzero(parity), np.flatnonzero(~parity)
    raw = _conditioner(weights, x[kept]).reshape(len(moved), 2)
    log_scale = SCALE_BOUND * jnp.tanh(raw[:, 1] / SCALE_BOUND)
    return x.at[moved].set(x[moved] * jnp.exp(log_scale) + raw[:, 0]), jnp.sum(log_scale)


def funnel_log_density(z):
    v, x = z[0], z[1:]
    return jax.scipy.stats.norm.logpdf(v, 0.0, 3.0) + jnp.sum(jax.scipy.stats.norm.logpdf(x, 0.0, jnp.exp(v / 2)))


def _hand_elbo(params, key):
    noise = jax.random.normal(key, (DRAWS, DIMENSION))

    def one(eps):
        z, log_det = eps, 0.0
        for index, weights in enumerate(params):
            z, layer_log_det = _coupling(weights, index, z)
            log_det = log_det + layer_log_det
        log_q = jnp.sum(jax.scipy.stats.norm.logpdf(eps)) - log_det
        return funnel_log_density(z) - log_q

    return jnp.mean(jax.vmap(one)(noise))


def make_hand_step(flow):
    optimizer = optax.adam(LEARNING_RATE)
    params = hand_params(flow)

    def step(state):
        params, opt_state, key = state
        key, sub = jax.random.split(key)
        loss, grads = jax.value_and_grad(lambda p: -_hand_elbo(p, sub))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), loss

    return step, (params, optimizer.init(params), jax.random.key(0))
