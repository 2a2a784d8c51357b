"""The systems compared in the VAE benchmark: one training step of a VAE on
binarised sklearn digits, in ppl, hand-written JAX + optax, and NumPyro SVI.

The same network in all three: a decoder MLP 10 -> 200 -> 64 (tanh hidden)
giving Bernoulli logits, an encoder MLP 64 -> 200 -> 20 giving the guide's
locations and softplus-raw scales, a standard normal prior on z (10), a
single-sample reparameterised ELBO summed over a fixed batch of 128 rows, and
``optax.adam(1e-3)``. Every system starts from the same flax nnx modules
(``make_networks``), so the same initial weights.

Every system's step is one jitted call that carries its own key, splits it
inside and returns the next one (NumPyro's ``svi.update`` does this), so a
training loop is one dispatch per step: ``state, loss = step(state, batch)``
with ``loss`` the negative ELBO estimate (NumPyro's convention).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
import optax
from flax import nnx
from numpyro.contrib.module import nnx_module
from numpyro.infer import SVI, Trace_ELBO

import ppl
from ppl import dist
from ppl.inference import vi

__all__ = [
    "LATENT",
    "HIDDEN",
    "PIXELS",
    "BATCH",
    "LEARNING_RATE",
    "MLP",
    "System",
    "StepState",
    "make_data",
    "make_networks",
    "make_pure_networks",
    "make_ppl_objective",
    "make_ppl",
    "make_hand",
    "make_numpyro",
    "hand_elbo",
    "BASELINE",
    "SYSTEMS",
]

LATENT, HIDDEN, PIXELS, BATCH = 10, 200, 64, 128
LEARNING_RATE = 1e-3


class MLP(nnx.Module):
    """``inputs -> hidden (tanh) -> outputs``, flax nnx ``Linear`` layers."""

    def __init__(self, inputs, hidden, outputs, rngs):
        self.l1 = nnx.Linear(inputs, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, outputs, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.tanh(self.l1(x)))


def make_data(batch_size=BATCH, seed=0):
    """``(all_images, batch)``: sklearn's 8x8 digits binarised (pixel/16 > 0.5),
    and a fixed batch of ``batch_size`` rows drawn without replacement."""
    from sklearn.datasets import load_digits

    images = (load_digits().data / 16.0 > 0.5).astype(np.float32)
    rows = np.random.default_rng(seed).choice(len(images), batch_size, replace=False)
    return jnp.asarray(images), jnp.asarray(images[rows])


def make_networks():
    """Fresh decoder and encoder with the same initial weights every call."""
    return {"decoder": MLP(LATENT, HIDDEN, PIXELS, nnx.Rngs(0)), "encoder": MLP(PIXELS, HIDDEN, 2 * LATENT, nnx.Rngs(1))}


def make_pure_networks():
    """The same networks as callables whose pytree is the weights' pure dict
    (``jax.tree_util.Partial``): flattening them for a jitted call is cheap,
    where an nnx module's pytree flattening walks its object graph in Python."""
    return {name: _as_partial(module) for name, module in make_networks().items()}


def _as_partial(module):
    graph = nnx.graphdef(module)

    def apply(pure, *args):
        state = nnx.state(module)  # a fresh State each call, filled with pure's arrays
        nnx.replace_by_pure_dict(state, pure)
        return nnx.merge(graph, state)(*args)

    return jax.tree_util.Partial(apply, nnx.to_pure_dict(nnx.state(module)))


class System(NamedTuple):
    """A system ready to train: ``step(state, batch) -> (state, loss)`` (jitted),
    its initial ``state``, and ``params_of(state)``, the networks as nnx modules."""

    step: Any
    state: Any
    params_of: Any


def _params(state):
    return state.params


class StepState(NamedTuple):
    """What ppl's and the hand-written step carry (NumPyro has its ``SVIState``)."""

    params: Any
    optimizer_state: Any
    key: Any


def _optax_step(loss_and_grad, optimizer):
    """``step(state, batch) -> (state, loss)`` from ``loss_and_grad(key, params, batch)``."""

    def step(state, batch):
        key, step_key = jax.random.split(state.key)
        loss, grads = loss_and_grad(step_key, state.params, batch)
        updates, optimizer_state = optimizer.update(grads, state.optimizer_state, state.params)
        return StepState(optax.apply_updates(state.params, updates), optimizer_state, key), loss

    return step


# ----- ppl: amortized guide, per_datum(elbo) -------------------------------------------


def make_ppl_model():
    """A fresh model object, so nothing ppl cached for another one is reused."""

    @ppl.gen
    def model(params, x):
        z = ppl.sample("z", dist.Normal(0.0, 1.0).expand([LATENT]).to_event(1))
        ppl.sample("x", dist.Bernoulli(logits=params["decoder"](z)).to_event(1))

    return model


def make_ppl_objective(params, batch):
    """``per_datum(elbo(model, amortized guide))`` of ``(key, params, {"x": batch}, batch)``."""
    model = make_ppl_model()
    guide = vi.amortized(model, (params, batch[0]), {"x": batch[0]})
    return vi.per_datum(vi.elbo(model, guide), in_axes=(0, 0))


def make_ppl(key, batch, networks=make_networks):
    """The step of ``vi.fit`` (its ``_chunk``) without the scan and the minibatch:
    the objective's ``value_and_grad_estimate``, negated, into optax."""
    params, optimizer = networks(), optax.adam(LEARNING_RATE)
    objective = make_ppl_objective(params, batch)

    def loss_and_grad(key, params, batch):
        value, grads = objective.value_and_grad_estimate(key, params, {"x": batch}, batch)
        return -value, jax.tree.map(jnp.negative, grads)

    state = StepState(params, optimizer.init(params), key)
    return System(jax.jit(_optax_step(loss_and_grad, optimizer)), state, _params)


# ----- hand-written JAX + optax ----------------------------------------------------------


def _normal_log_density(value, loc, scale):
    return -0.5 * ((value - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi)


def hand_elbo(key, params, batch):
    """Single-sample reparameterised ELBO, summed over the batch."""
    out = params["encoder"](batch)
    loc, scale = out[:, :LATENT], jax.nn.softplus(out[:, LATENT:])
    z = loc + scale * jax.random.normal(key, loc.shape)
    logits = params["decoder"](z)
    log_likelihood = jnp.sum(batch * jax.nn.log_sigmoid(logits) + (1 - batch) * jax.nn.log_sigmoid(-logits))
    log_prior = jnp.sum(_normal_log_density(z, 0.0, 1.0))
    log_guide = jnp.sum(_normal_log_density(z, loc, scale))
    return log_likelihood + log_prior - log_guide


def make_hand(key, batch, networks=make_networks):
    """The same ELBO written directly, ``jax.value_and_grad``, optax."""
    params, optimizer = networks(), optax.adam(LEARNING_RATE)
    loss_and_grad = jax.value_and_grad(lambda params, key, batch: -hand_elbo(key, params, batch))
    step = _optax_step(lambda key, params, batch: loss_and_grad(params, key, batch), optimizer)
    return System(jax.jit(step), StepState(params, optimizer.init(params), key), _params)


# ----- NumPyro SVI, Trace_ELBO, flax nnx modules ----------------------------------------


def make_numpyro(key, batch):
    """``SVI(model, guide, optax.adam, Trace_ELBO())`` with the networks through
    ``nnx_module``. ``svi.update`` is not jitted inside NumPyro, so it is jitted
    here, as NumPyro's examples do; ``svi.init`` runs the model once eagerly to
    collect the parameters (not counted as compile time)."""
    networks = make_networks()

    def model(x):
        decoder = nnx_module("decoder", networks["decoder"])
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", nd.Normal(0.0, 1.0).expand([LATENT]).to_event(1))
            numpyro.sample("x", nd.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        out = nnx_module("encoder", networks["encoder"])(x)
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("z", nd.Normal(out[:, :LATENT], jax.nn.softplus(out[:, LATENT:])).to_event(1))

    svi = SVI(model, guide, optax.adam(LEARNING_RATE), Trace_ELBO())
    return System(jax.jit(svi.update), svi.init(key, batch), lambda state: _numpyro_networks(svi.get_params(state)))


def _numpyro_networks(raw):
    """NumPyro's parameters (``name$params`` pure dicts) as nnx modules."""
    networks = make_networks()
    for name, module in networks.items():
        graph, params_state, rest = nnx.split(module, nnx.Param, nnx.Not(nnx.Param))
        nnx.replace_by_pure_dict(params_state, raw[name + "$params"])
        networks[name] = nnx.merge(graph, params_state, rest)
    return networks


BASELINE = "hand-written JAX"
# name -> make(key, batch) -> System
SYSTEMS = {BASELINE: make_hand, "ppl": make_ppl, "NumPyro": make_numpyro}
