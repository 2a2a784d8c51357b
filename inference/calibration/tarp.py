"""TARP coverage (Lemos, Coogan, Hezaveh and Perreault-Levasseur 2023,
"Sampling-based accuracy testing of posterior estimators for general
inference", ICML): the expected coverage probability of random balls,
a test of the *joint* posterior of all latents at once.

Per simulation, a reference point r is drawn, and f = the fraction of
posterior draws closer to r than the true parameter is. For draws from the
true posterior, f is uniform whatever r is, as long as r does not single out
the truth among the L + 1 points (it may depend on the data, and on the draws
and the truth symmetrically); the expected coverage probability ECP(a) = P(f < a)
then lies on the diagonal, and the paper shows that the converse holds too,
for all reference distributions. Distances are Euclidean in coordinates
standardised per simulation, and r is uniform in a box of +-``width``
standard deviations around the mean (the paper draws references around the
posterior). The default box is small, 0.25 sd: balls centred near the
posterior test the shape of its bulk, which is where a wrong dependence
shows. On a 2-D Gaussian with correlation -0.92 sampled as if independent
(exact marginals; 200 simulations x 100 draws), the test failed 97.5%,
95.5%, 89% and 50% of 200 seeds with boxes of 0, 0.25, 0.5 and 1 sd; far
references reduce the balls to half-planes, a test of one projection.

The standardisation uses the draws *and* the truth together (their mean and
sd), a function symmetric in the L + 1 points: were it computed from the
draws alone, each draw would pull the centre towards itself, and the draws
would lie nearer the reference than the truth by a bias of order 1/L. So
L f is exactly uniform on 0..L under a right posterior (ties broken at
random), the rank of a test quantity in SBC's sense, and the same
simultaneous ECDF band that tests SBC's ranks tests the ECP curve; a band
from the bootstrap over simulations (the paper's) shows its uncertainty.
The joint test catches posteriors whose every marginal is right but whose
dependence is wrong, which per-scalar SBC cannot see.
"""

from typing import Any, NamedTuple

import numpy as np

from ppl.core import as_key
from ppl.inference.calibration.ecdf_bands import EcdfBand, ecdf_band, ecdf_counts, ecdf_p_values, in_band
from ppl.inference.calibration.report import format_number
from ppl.inference.calibration.simulate import Simulations, host_rng, simulate

__all__ = ["TARPResult", "tarp", "tarp_test", "coverage_ranks"]


class TARPResult(NamedTuple):
    """The expected coverage probability of the joint posterior.

    - ``credibility`` (K,): the levels a; ``ecp`` (K,): the expected coverage at each;
    - ``bootstrap_lower``, ``bootstrap_upper`` (K,): the bootstrap band of ``ecp``
      (over simulations, level ``1 - alpha``);
    - ``ranks`` (num_simulations,): L f per simulation, in 0..``num_draws``;
    - ``max_deviation``: max |ECP(a) - a|; ``p_value``: Säilynoja et al.'s ECDF
      test of the ranks; ``in_band``/``passed``: the ECP curve inside the
      simultaneous band ``band`` (level ``1 - alpha``) at every level;
    - ``simulations``: what it was computed from.
    """

    credibility: np.ndarray
    ecp: np.ndarray
    bootstrap_lower: np.ndarray
    bootstrap_upper: np.ndarray
    ranks: np.ndarray
    num_draws: int
    max_deviation: float
    p_value: float
    band: EcdfBand
    alpha: float
    passed: bool
    warnings: tuple
    simulations: Any

    def summary(self):
        """One line: the verdict, the largest deviation from the diagonal and the p-value."""
        verdict = "passed" if self.passed else "FAILED"
        lines = [
            f"TARP: {self.ranks.shape[0]} simulations x {self.num_draws} draws of {len(self.simulations.names)} "
            f"latent scalars jointly, {verdict} at alpha={self.alpha:g}: max |ECP - credibility| "
            f"{format_number(self.max_deviation)}, ECDF p-value {format_number(self.p_value)}"
        ]
        return "\n".join(lines + [f"warning: {warning}" for warning in self.warnings])

    def __repr__(self):
        return self.summary()

    def plot(self, path=None, ax=None, **options):
        """ECP against credibility with the bootstrap and simultaneous bands
        (``plots.plot_tarp``); saved as PNG to ``path`` when given. Returns the figure."""
        from ppl.inference.calibration.plots import plot_tarp

        return plot_tarp(self, path, ax, **options)


def coverage_ranks(key, truths, draws, width=0.25):
    """``(num_simulations,)``: per simulation, how many of the draws (L, scalars)
    lie closer to a random reference point than the truth (scalars,), ties broken
    at random; the reference is uniform in the box mean +- ``width`` sd of the draws
    and the truth together, in coordinates standardised by that mean and sd.

    >>> draws = jnp.stack([jnp.zeros(9), jnp.arange(9.0)], axis=-1)[None]  # one simulation
    >>> coverage_ranks(jax.random.key(0), jnp.array([[0.0, 4.0]]), draws).shape
    (1,)
    """
    truths, draws = np.asarray(truths, float), np.asarray(draws, float)
    points = np.concatenate([draws, truths[:, None, :]], axis=1)
    mean, sd = points.mean(axis=1, keepdims=True), points.std(axis=1, keepdims=True)
    sd = np.where(sd > 0, sd, 1.0)  # a constant coordinate adds nothing to any distance
    rng = host_rng(key, 1)
    reference = rng.uniform(-width, width, truths[:, None, :].shape)
    distance = lambda x: np.sqrt(np.sum(((x - mean) / sd - reference) ** 2, axis=-1))
    to_draws, to_truth = distance(draws), distance(truths[:, None, :])
    closer, ties = np.sum(to_draws < to_truth, axis=1), np.sum(to_draws == to_truth, axis=1)
    uniform = rng.uniform(size=closer.shape)
    return closer + np.floor(uniform * (ties + 1)).astype(closer.dtype)


def tarp_test(simulations, key, *, alpha=0.05, width=0.25, num_bootstrap=1000):
    """TARP of ``simulations`` (from ``calibration.simulate``); ``key`` draws the
    reference points and the bootstrap. Returns a ``TARPResult``.

    >>> rng = np.random.default_rng(0)
    >>> truths = rng.normal(size=(200, 2))
    >>> draws = rng.normal(size=(200, 50, 2))  # from the prior, the right posterior when data say nothing
    >>> sims = ppl.inference.calibration.Simulations(["a", "b"], truths, draws, None, {}, ())
    >>> bool(tarp_test(sims, jax.random.key(0)).passed), bool(tarp_test(sims._replace(draws=draws / 2), jax.random.key(0)).passed)
    (True, False)
    """
    if not isinstance(simulations, Simulations):
        raise TypeError(f"simulations={type(simulations).__name__}: pass the result of calibration.simulate")
    if not width > 0:
        raise ValueError(f"width={width!r}: need a positive number of standard deviations")
    key = as_key(key)
    ranks = coverage_ranks(key, simulations.truths, simulations.draws, width)[:, None]
    num, num_draws = ranks.shape[0], simulations.num_draws
    band = ecdf_band(num, num_draws, alpha)
    ecp = ecdf_counts(ranks, band)[:, 0] / num
    rows = host_rng(key, 2).integers(0, num, (num_bootstrap, num))
    bootstrap = ecdf_counts(ranks[rows, 0].T, band).T / num  # (num_bootstrap, K)
    lower, upper = np.quantile(bootstrap, [alpha / 2, 1 - alpha / 2], axis=0)
    inside = bool(in_band(ranks, band)[0])
    return TARPResult(
        band.probabilities, ecp, lower, upper, ranks[:, 0], num_draws, float(np.max(np.abs(ecp - band.probabilities))),
        float(ecdf_p_values(ranks, band)[0]), band, float(alpha), inside, simulations.warnings, simulations,
    )


def tarp(key, model, args, observed, infer_fn, num_simulations, num_draws, *, alpha=0.05, width=0.25,
         num_bootstrap=1000, vectorize="auto", batch_size=None, progress=True):
    """TARP coverage of ``infer_fn`` on ``model(*args)``: simulate parameter and
    data sets, run ``infer_fn`` on each, and test the expected coverage of random
    balls around the joint posterior draws. Arguments as ``sbc``'s; ``width``: the
    half-width of the box the reference points are drawn in, in posterior sds;
    ``num_bootstrap``: resamples of the simulations for the bootstrap band.
    Returns a ``TARPResult`` (``summary()``, ``plot(path)``, ``passed``).

    >>> @ppl.gen
    ... def model():
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0).expand([2]))
    ...     ppl.sample("y", dist.Normal(mu, 1.0))
    >>> def infer(key, observations):  # exact: each mu_i | y_i is N(y_i / 2, 1 / 2)
    ...     return {"mu": observations["y"] / 2 + jax.random.normal(key, (100, 2)) / jnp.sqrt(2.0)}
    >>> result = ppl.inference.calibration.tarp(jax.random.key(0), model, (), ["y"], infer, 100, 100, progress=False)
    >>> result.ecp.shape, result.passed
    ((100,), True)
    """
    key = as_key(key)
    simulations = simulate(key, model, args, observed, infer_fn, num_simulations, num_draws,
                           vectorize=vectorize, batch_size=batch_size, progress=progress)  # fmt: skip
    return tarp_test(simulations, key, alpha=alpha, width=width, num_bootstrap=num_bootstrap)
