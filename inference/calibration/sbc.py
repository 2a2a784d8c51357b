"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari and
Gelman 2018, "Validating Bayesian inference algorithms with
simulation-based calibration", arXiv:1804.06788).

Draw parameters theta from the prior and data y from the model given them;
the rank of theta among L draws from the computed posterior given y is
uniform on 0..L, for every latent scalar, exactly when the draws come from
the true posterior (averaged over the prior). Each scalar's ranks are
tested for uniformity with the simultaneous ECDF band of Säilynoja et al.
(2022) (the decision; also a p-value) and with a chi-square test of their
histogram (reported). The family-wise false-alarm rate is at most ``alpha``:
the bands are Bonferroni-adjusted over the scalars.
"""

from typing import Any, NamedTuple

import numpy as np

from ppl.core import as_key
from ppl.inference.calibration.ecdf_bands import EcdfBand, chi_square_p_values, ecdf_band, ecdf_p_values, in_band
from ppl.inference.calibration.report import format_number, text_table
from ppl.inference.calibration.simulate import Simulations, host_rng, simulate

__all__ = ["SBCResult", "sbc", "sbc_test", "rank_statistics"]


class SBCResult(NamedTuple):
    """Ranks and uniformity tests per latent scalar.

    - ``names``: the scalars; ``ranks`` (num_simulations, scalars) in 0..``num_draws``;
    - ``ecdf_p_values``, ``chi_square_p_values`` (scalars,): the two tests' p-values;
    - ``in_band`` (scalars,): does the ECDF lie inside ``band`` at every point;
    - ``band``: the simultaneous band (an ``EcdfBand``) at level ``alpha / scalars``;
    - ``passed``: every scalar inside the band (family-wise false-alarm rate <= ``alpha``);
    - ``simulations``: what the ranks were computed from (pass it to ``tarp_test``).
    """

    names: list
    ranks: np.ndarray
    num_draws: int
    ecdf_p_values: np.ndarray
    chi_square_p_values: np.ndarray
    in_band: np.ndarray
    band: EcdfBand
    alpha: float
    passed: bool
    warnings: tuple
    simulations: Any

    def summary(self):
        """A text table: per scalar the ECDF and chi-square p-values and pass/FAIL."""
        verdict = "passed" if self.passed else "FAILED"
        header = (
            f"SBC: {self.ranks.shape[0]} simulations x {self.num_draws} draws, {verdict} at family-wise "
            f"alpha={self.alpha:g} (ECDF bands at {self.band.alpha:.3g} per scalar)"
        )
        columns = {
            "ecdf_p": [format_number(p) for p in self.ecdf_p_values],
            "chi2_p": [format_number(p) for p in self.chi_square_p_values],
            "ecdf_band": ["pass" if ok else "FAIL" for ok in self.in_band],
        }
        return text_table(self.names, columns, header, self.warnings)

    def __repr__(self):
        return self.summary()

    def plot(self, path=None, axes=None, **options):
        """The ECDF difference of each scalar's ranks with the band
        (``plots.plot_sbc``); saved as PNG to ``path`` when given. Returns the figure."""
        from ppl.inference.calibration.plots import plot_sbc

        return plot_sbc(self, path, axes, **options)


def rank_statistics(key, truths, draws):
    """``(num_simulations, scalars)`` ranks: how many of the draws (simulations,
    L, scalars) lie below the truth (simulations, scalars), ties broken at random
    (so that discrete latents too get ranks uniform on 0..L).

    >>> draws = jnp.arange(5.0)[None, :, None]  # one simulation, draws 0..4
    >>> rank_statistics(jax.random.key(0), jnp.array([[2.5]]), draws).tolist()
    [[3]]
    """
    truths, draws = np.asarray(truths)[:, None, :], np.asarray(draws)
    below = np.sum(draws < truths, axis=1)
    ties = np.sum(draws == truths, axis=1)
    uniform = host_rng(key, 0).uniform(size=below.shape)
    return below + np.floor(uniform * (ties + 1)).astype(below.dtype)


def sbc_test(simulations, key, *, alpha=0.05):
    """The SBC ranks and tests of ``simulations`` (from ``calibration.simulate``);
    ``key`` breaks ties between a draw and the truth. Returns an ``SBCResult``.

    >>> sims = ppl.inference.calibration.Simulations(
    ...     ["x"], np.zeros((100, 1)), np.asarray(jax.random.normal(jax.random.key(0), (100, 20, 1))), None, {}, ())
    >>> bool(sbc_test(sims, jax.random.key(1)).passed)  # the truth 0 is the median of N(0, 1) every time
    False
    """
    if not isinstance(simulations, Simulations):
        raise TypeError(f"simulations={type(simulations).__name__}: pass the result of calibration.simulate")
    ranks = rank_statistics(as_key(key), simulations.truths, simulations.draws)
    num_draws = simulations.num_draws
    band = ecdf_band(ranks.shape[0], num_draws, alpha / ranks.shape[1])
    inside = in_band(ranks, band)
    return SBCResult(
        simulations.names, ranks, num_draws, ecdf_p_values(ranks, band), chi_square_p_values(ranks, num_draws), inside,
        band, float(alpha), bool(np.all(inside)), simulations.warnings, simulations,
    )


def sbc(key, model, args, observed, infer_fn, num_simulations, num_draws, *, alpha=0.05, vectorize="auto",
        batch_size=None, progress=True):
    """Simulation-based calibration of ``infer_fn`` on ``model(*args)``: draw
    ``num_simulations`` parameter and data sets from the model, run
    ``infer_fn(key, observations)`` on each data set, and test the ranks of the
    parameters among ``num_draws`` posterior draws for uniformity.

    ``observed`` names the data addresses; ``infer_fn`` returns posterior draws
    of the latents (a choice map with a leading draws axis, or (chains, draws)
    axes, a ``ppl.Trace``, an ``mcmc`` result: Markov chains are thinned to
    ``num_draws``, with a warning when their ESS is lower); ``vectorize``,
    ``batch_size``, ``progress`` as in ``simulate``; ``alpha``: the family-wise
    false-alarm rate over the latent scalars. Returns an ``SBCResult``
    (``summary()``, ``plot(path)``, ``passed``).

    >>> @ppl.gen
    ... def model():
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     ppl.sample("y", dist.Normal(mu, 1.0).expand([4]))
    >>> def infer(key, observations):  # exact: the posterior is N(sum(y) / 5, 1 / 5)
    ...     return {"mu": observations["y"].sum() / 5 + jax.random.normal(key, (100,)) / jnp.sqrt(5.0)}
    >>> result = ppl.inference.calibration.sbc(jax.random.key(2), model, (), ["y"], infer, 100, 100, progress=False)
    >>> result.ranks.shape, result.passed  # right draws fail at alpha's rate: 6 of 100 seeds, seed 0 among them
    ((100, 1), True)
    """
    key = as_key(key)
    simulations = simulate(key, model, args, observed, infer_fn, num_simulations, num_draws,
                           vectorize=vectorize, batch_size=batch_size, progress=progress)  # fmt: skip
    return sbc_test(simulations, key, alpha=alpha)  # the key's host stream breaks ties: no overlap with simulate's
