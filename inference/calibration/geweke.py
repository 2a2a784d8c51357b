"""Geweke's joint-distribution test of an MCMC kernel (Geweke 2004,
"Getting it right: joint distribution tests of posterior simulators",
JASA 99:799).

Two ways to draw from the model's joint distribution p(theta, y):
marginal-conditional, independent draws of the model (``simulate``); and
successive-conditional, a chain that alternates one kernel step on the
latents theta given the data y with fresh data y ~ p(y | theta). A kernel
that leaves every posterior p(theta | y) invariant leaves the joint
invariant, so the successive chain, started from a joint draw, stays
distributed as p(theta, y). A wrong acceptance ratio (which a single
posterior can hide) moves it away. Per test statistic g(theta, y), the two
means are compared with a z-score; the chain's standard error uses its
effective sample size (many short chains vectorised, ESS across them).
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import ppl
from ppl.choicemap import by_path, merge
from ppl.core import as_args, as_key
from ppl.inference import diagnostics
from ppl.inference.calibration.observed import LatentLayout, as_observed_selection, split_choices
from ppl.inference.calibration.report import format_number, text_table
from ppl.inference.calibration.simulate import check_count, prior_simulations
from ppl.inference.summary_table import _row_names
from ppl.trace import join_static, split_static

__all__ = ["GewekeResult", "geweke", "DefaultStatistics"]


class GewekeResult(NamedTuple):
    """Per test statistic: ``z_scores`` and two-sided ``p_values``; the means and
    standard errors of the successive-conditional chain (``successive_*``, its
    ESS in ``successive_ess``) and of the marginal-conditional draws
    (``marginal_*``). ``passed``: every p-value above ``alpha / statistics``
    (Bonferroni: family-wise false-alarm rate at most ``alpha``)."""

    names: list
    z_scores: np.ndarray
    p_values: np.ndarray
    successive_mean: np.ndarray
    successive_se: np.ndarray
    successive_ess: np.ndarray
    marginal_mean: np.ndarray
    marginal_se: np.ndarray
    num_chains: int
    num_steps: int
    num_marginal: int
    alpha: float
    passed: bool

    def summary(self):
        """A text table: per statistic both means, the z-score, the p-value and pass/FAIL."""
        verdict = "passed" if self.passed else "FAILED"
        threshold = self.alpha / len(self.names)
        header = (
            f"Geweke: {self.num_chains} chains x {self.num_steps} steps against {self.num_marginal} model draws, "
            f"{verdict} at family-wise alpha={self.alpha:g} (p > {threshold:.3g} per statistic)"
        )
        columns = {
            "successive": [format_number(m) for m in self.successive_mean],
            "marginal": [format_number(m) for m in self.marginal_mean],
            "z": [f"{z:.2f}" for z in self.z_scores],
            "p": [format_number(p) for p in self.p_values],
            "test": ["pass" if p > threshold else "FAIL" for p in self.p_values],
        }
        return text_table(self.names, columns, header)

    def __repr__(self):
        return self.summary()

    def plot(self, path=None, ax=None):
        """The z-scores with the Bonferroni thresholds (``plots.plot_geweke``);
        saved as PNG to ``path`` when given. Returns the figure."""
        from ppl.inference.calibration.plots import plot_geweke

        return plot_geweke(self, path, ax)


class DefaultStatistics:
    """The default test statistics: each latent scalar, its square, the mean
    of the observed scalars ȳ, and each latent scalar times ȳ (which catch a
    kernel that mixes up how the latents depend on the data). Called on a
    choice map, returns a vector; ``names`` says what each entry is."""

    def __init__(self, latents, observations, selection):
        self.latent_layout = LatentLayout(latents)
        self.observed_layout = LatentLayout(observations)
        self.selection = selection
        scalars = self.latent_layout.names
        self.names = scalars + [f"{n}^2" for n in scalars] + ["mean(data)"] + [f"{n}*mean(data)" for n in scalars]

    def __call__(self, choices):
        latents, observations = split_choices(choices, self.selection)
        theta = self.latent_layout.matrix(latents, ())
        data_mean = jnp.mean(self.observed_layout.matrix(observations, ()))
        return jnp.concatenate([theta, theta**2, data_mean[None], theta * data_mean])

    def __eq__(self, other):
        return isinstance(other, DefaultStatistics) and (self.latent_layout, self.observed_layout, self.selection) == (
            other.latent_layout, other.observed_layout, other.selection)  # fmt: skip

    def __hash__(self):
        return hash((self.latent_layout, self.observed_layout, self.selection))


def geweke(key, model, args, observed, kernel, num_chains, num_steps, *, statistics=None, num_marginal=None,
           alpha=0.05, progress=True):
    """Geweke's test of ``kernel``, an MCMC kernel on traces of ``model(*args)``
    (``mcmc.mh``, ``mcmc.gibbs``, ``mcmc.on_trace(model, ..., nuts)``, their
    compositions) that moves the latents and keeps the ``observed`` addresses.

    - ``observed``: the data addresses (as in ``sbc``); they are redrawn after each
      kernel step by ``regenerate``, exact when nothing in the model depends on them
      (checked);
    - ``num_chains`` successive-conditional chains of ``num_steps`` steps each, one
      compiled vmap; ``num_marginal`` independent model draws (default
      ``num_chains * num_steps``);
    - ``statistics``: a function of a choice map returning a dict of arrays (each
      scalar a statistic) or a vector, default ``DefaultStatistics``;
    - ``alpha``: the family-wise false-alarm rate over the statistics.

    Returns a ``GewekeResult`` (``summary()``, ``plot(path)``, ``passed``).

    >>> @ppl.gen
    ... def model():
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     ppl.sample("y", dist.Normal(mu, 0.5).expand([2]))
    >>> kernel = mcmc.mh(model, "mu")  # redraw mu from the prior, accept by the likelihood ratio
    >>> result = ppl.inference.calibration.geweke(jax.random.key(0), model, (), ["y"], kernel, 200, 10, progress=False)
    >>> result.names[:2], result.passed
    (['mu', 'mu^2'], True)
    """
    key, args = as_key(key), as_args(args)
    check_count(num_chains=num_chains)
    check_count(num_steps=num_steps, minimum=4)
    num_marginal = num_chains * num_steps if num_marginal is None else num_marginal
    check_count(num_marginal=num_marginal, minimum=2)
    selection = as_observed_selection(observed)
    start_key, chain_key, marginal_key = jax.random.split(key, 3)
    latents, observations = prior_simulations(marginal_key, model, args, selection, num_marginal)
    statistic_fn = statistics or DefaultStatistics(*jax.tree.map(lambda x: x[0], (latents, observations)), selection)
    as_vector, names = _vectorised_statistics(statistic_fn, jax.tree.map(lambda x: x[0], merge(latents, observations)))
    marginal = np.asarray(jax.jit(jax.vmap(as_vector))(merge(latents, observations)), np.float64)
    _check_leaves(_leaf_weight(model, args, selection, start_key), selection)  # before compiling the chains
    successive = _successive(model, args, kernel, selection, as_vector, start_key, chain_key, num_chains, num_steps, progress)
    return _compare(names, successive, marginal, alpha)


def _vectorised_statistics(statistic_fn, choices):
    """``(fn, names)``: ``fn(choices)`` as one vector, and a name per entry."""
    names = getattr(statistic_fn, "names", None)
    value = jax.eval_shape(statistic_fn, choices)
    if isinstance(value, dict):
        flat = by_path(value)
        names = [n for path, leaf in flat.items() for n in _row_names("/".join(path), leaf.shape)]
        return _Flattened(statistic_fn), names
    if names is None:
        names = [f"g[{i}]" for i in range(math.prod(value.shape))]
    return _Flattened(statistic_fn), list(names)


class _Flattened(NamedTuple):
    fn: object

    def __call__(self, choices):
        value = self.fn(choices)
        leaves = jax.tree.leaves(value)
        return jnp.concatenate([jnp.reshape(leaf, (-1,)).astype(jnp.result_type(float)) for leaf in leaves])


def _successive(model, args, kernel, selection, as_vector, start_key, key, num_chains, num_steps, progress):
    """``(chains, num_steps, statistics)``: the statistics after each step of the
    successive-conditional chains, started from joint draws of the model, run in
    chunks for the progress bar."""
    chunk = max(1, -(-num_steps // 20)) if progress else num_steps
    dynamic, description = split_static(args)
    traces, outputs, done, largest_weight = jax.random.split(start_key, num_chains), [], 0, 0.0
    with tqdm(total=num_steps, desc="geweke", disable=not progress) as bar:
        while done < num_steps:
            keys = jax.random.split(jax.random.fold_in(key, done), chunk)
            traces, (values, weights) = _chunk(model, description, kernel, selection, as_vector, traces, keys, *dynamic)
            outputs.append(values)
            largest_weight = max(largest_weight, float(weights))
            bar.update(min(chunk, num_steps - done))
            done += chunk
    _check_leaves(largest_weight, selection)
    return np.asarray(jnp.concatenate(outputs, axis=1)[:, :num_steps], np.float64)


def _leaf_weight(model, args, selection, key):
    """regenerate's relative weight when it redraws the data of one joint draw."""
    trace = model.simulate(jax.random.fold_in(key, 1), args)
    _, log_weight = model.regenerate(jax.random.fold_in(key, 2), trace, selection, args)
    return abs(float(log_weight)) / (1.0 + abs(float(trace.log_density)))


def _check_leaves(largest_weight, selection):
    """Redrawing the data from the model by ``regenerate`` is a draw from
    p(y | theta) only when no choice depends on y: then its weight is 0
    (up to rounding, relative to the log density)."""
    if not largest_weight <= 1e-4:
        raise ValueError(
            f"geweke redraws the observed addresses ({selection}) from the model given the latents, which is a draw "
            f"from p(data | latents) only when nothing the model samples depends on them; here regenerate's weight "
            f"reached {largest_weight:.4g}, not 0: some choice depends on the data"
        )


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _chunk(model, description, kernel, selection, as_vector, traces, keys, *dynamic):
    """Steps of every chain for ``keys``; ``traces`` are the chains' traces, or
    the keys to start them with (a joint draw each, in the same program)."""
    if not isinstance(traces, ppl.Trace):
        args = join_static(dynamic, description)
        traces = jax.vmap(lambda k: model.simulate(k, args))(traces)

    def step(trace, key):
        kernel_key, data_key = jax.random.split(key)
        trace = kernel.step(kernel_key, kernel.init(trace))[0].trace
        new, log_weight = model.regenerate(data_key, trace, selection, trace.args)
        relative = jnp.abs(log_weight) / (1.0 + jnp.abs(trace.log_density))
        return new, (as_vector(new.choices), relative)

    def chain(trace, chain_keys):
        return jax.lax.scan(step, trace, chain_keys)

    num_chains = jax.tree.leaves(traces.choices)[0].shape[0]
    chain_keys = jax.vmap(lambda i: jax.vmap(lambda k: jax.random.fold_in(k, i))(keys))(jnp.arange(num_chains))
    traces, (values, weights) = jax.vmap(chain)(traces, chain_keys)
    return traces, (values, jnp.max(weights))


def _compare(names, successive, marginal, alpha):
    mean_s, mean_m = successive.mean(axis=(0, 1)), marginal.mean(axis=0)
    ess = np.asarray(diagnostics.ess_mean(successive), np.float64)
    se_s = successive.reshape(-1, successive.shape[-1]).std(axis=0, ddof=1) / np.sqrt(ess)
    se_m = marginal.std(axis=0, ddof=1) / np.sqrt(marginal.shape[0])
    z = (mean_s - mean_m) / np.sqrt(se_s**2 + se_m**2)
    p = np.array([math.erfc(abs(value) / math.sqrt(2.0)) for value in z])
    num_chains, num_steps = successive.shape[:2]
    passed = bool(np.all(p > alpha / len(names)))
    return GewekeResult(names, z, p, mean_s, se_s, ess, mean_m, se_m, num_chains, num_steps, marginal.shape[0], float(alpha), passed)
