"""The simulations every calibration check starts from: parameters and data
drawn from the model, and an inference function's posterior draws given
each simulated data set."""

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from ppl.core import as_args, as_key
from ppl.inference.calibration.draws import posterior_matrix
from ppl.inference.calibration.observed import LatentLayout, as_observed_selection, split_choices
from ppl.inference.calibration.vectorise import map_simulations
from ppl.trace import join_static, split_static

__all__ = ["Simulations", "simulate", "prior_simulations", "check_count", "host_rng"]


class Simulations(NamedTuple):
    """Simulated parameters and the posterior draws an inference function
    returned for the data simulated with them.

    - ``names``: the latent scalars, ``["mu", "theta[0]", ...]``;
    - ``truths`` (num_simulations, scalars): the parameters the data were simulated from;
    - ``draws`` (num_simulations, num_draws, scalars): posterior draws given each data set;
    - ``ess`` (num_simulations, scalars): the chains' ESS per scalar (Markov chains; None otherwise);
    - ``observations``: the simulated data, a choice map with a leading simulations axis;
    - ``warnings``: what makes the draws unfit for rank statistics (autocorrelated, not finite).
    """

    names: list
    truths: np.ndarray
    draws: np.ndarray
    ess: Any
    observations: Any
    warnings: tuple

    @property
    def num_simulations(self):
        return self.truths.shape[0]

    @property
    def num_draws(self):
        return self.draws.shape[1]


@dataclasses.dataclass(frozen=True)
class _Posterior:
    """One simulation's inference: hashable (by its fields), so the compiled
    vmap of it is reused by the next call with the same ``infer_fn``."""

    infer_fn: Callable
    layout: LatentLayout
    num_draws: int

    def __call__(self, key, observations):
        return posterior_matrix(self.infer_fn(key, observations), self.layout, self.num_draws)


def simulate(key, model, args, observed, infer_fn, num_simulations, num_draws, *, vectorize="auto", batch_size=None,
             progress=True):
    """Draw ``num_simulations`` parameter and data sets from ``model(*args)``
    (``simulate``), and for each run ``infer_fn(key, observations)``.

    - ``observed``: which choices are data (a ``ppl.Selection``, an address, a list
      of addresses or a choice map whose structure names them); every other choice
      is a latent.
    - ``infer_fn(key, observations)``: posterior draws of every latent given the data
      (a choice map nested like the model's), as a choice map with a leading draws
      axis or ``(chains, draws)`` axes, a ``ppl.Trace`` of draws, or an ``mcmc`` result.
    - ``num_draws``: draws kept per simulation: the first ones, or for chains
      ``num_draws`` evenly spaced over all chains (thinned; a warning when the ESS
      is below ``num_draws``, which leaves the kept draws autocorrelated).
    - ``vectorize``: "auto" (one compiled ``vmap`` over simulations when ``infer_fn``
      can be traced, else one call at a time with a progress bar), True or False;
      ``batch_size``: simulations per compiled call (all by default); with several
      devices each batch is split across them.

    Returns ``Simulations``.

    >>> @ppl.gen
    ... def model():
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     ppl.sample("y", dist.Normal(mu, 1.0))
    >>> def exact(key, observations):  # the posterior is N(y / 2, 1 / 2)
    ...     return {"mu": observations["y"] / 2 + jax.random.normal(key, (50,)) / jnp.sqrt(2.0)}
    >>> sims = ppl.inference.calibration.simulate(jax.random.key(0), model, (), ["y"], exact, 20, 50, progress=False)
    >>> sims.names, sims.truths.shape, sims.draws.shape
    (['mu'], (20, 1), (20, 50, 1))
    """
    key, args = as_key(key), as_args(args)
    check_count(num_simulations=num_simulations, minimum=2)
    check_count(num_draws=num_draws)
    selection = as_observed_selection(observed)
    if not callable(infer_fn):
        raise TypeError(f"infer_fn={infer_fn!r}: need a function infer_fn(key, observations) -> posterior draws")
    prior_key, infer_key = jax.random.split(key)
    latents, observations = prior_simulations(prior_key, model, args, selection, num_simulations)
    layout = LatentLayout(jax.tree.map(lambda x: x[0], latents))
    truths = np.asarray(layout.matrix(latents, (num_simulations,)))
    keys = jax.random.split(infer_key, num_simulations)
    draws, ess = map_simulations(_Posterior(infer_fn, layout, int(num_draws)), keys, observations, vectorize=vectorize,
                                 batch_size=batch_size, progress=progress, description="calibration")  # fmt: skip
    draws, ess = np.asarray(draws), None if ess is None else np.asarray(ess)
    return Simulations(layout.names, truths, draws, ess, observations, _warnings(draws, ess, num_draws))


def prior_simulations(key, model, args, selection, num_simulations):
    """``(latents, observations)``: choice maps of ``num_simulations`` draws from
    the model, cut by the ``selection`` of observed addresses (checked)."""
    dynamic, description = split_static(as_args(args))
    choices = _prior_choices(model, description, jax.random.split(key, num_simulations), *dynamic)
    return split_choices(choices, selection)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _prior_choices(model, description, keys, *dynamic):
    args = join_static(dynamic, description)
    return jax.vmap(lambda k: model.simulate(k, args).choices)(keys)


def host_rng(key, stream):
    """A NumPy generator determined by a JAX ``key`` and a ``stream`` number: the
    tests' own randomness (tie-breaks, reference points, bootstrap) runs on the
    host, where each jax.random call on a new shape would compile first.

    >>> float(host_rng(jax.random.key(0), 1).uniform()) == float(host_rng(jax.random.key(0), 1).uniform())
    True
    """
    return np.random.default_rng([int(word) for word in np.ravel(jax.random.key_data(key))] + [stream])


def check_count(minimum=1, **named):
    for name, value in named.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name}={value!r}: need an integer >= {minimum}")


def _warnings(draws, ess, num_draws):
    warnings = []
    num = draws.shape[0]
    not_finite = int(np.sum(~np.all(np.isfinite(draws), axis=(1, 2))))
    if not_finite:
        warnings.append(f"infer_fn returned draws that are not finite in {not_finite} of {num} simulations")
    if ess is not None:
        low = np.min(ess, axis=1) < num_draws
        if np.any(low):
            warnings.append(
                f"in {int(np.sum(low))} of {num} simulations the chains' ESS (smallest {np.nanmin(ess):.0f}) is below "
                f"num_draws={num_draws}: the thinned draws are autocorrelated, which skews ranks even for a correct "
                "sampler; run longer chains or lower num_draws"
            )
    return tuple(warnings)
