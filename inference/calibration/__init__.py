"""Calibration of inference algorithms: ``from ppl.inference import calibration``.

A ppl model stays generative, so the same model that is conditioned also
simulates the parameters and data sets that check an inference algorithm
on it. Every check takes any inference function ``infer_fn(key,
observations) -> posterior draws`` (importance sampling with resampling, a
fitted ``vi`` guide's draws, ``mcmc.nuts``, SMC), runs it over many
simulated data sets in one compiled ``vmap`` when it can (else one by one,
with a progress bar), and says pass or fail at a stated false-alarm rate:

- ``sbc``: simulation-based calibration, per latent scalar: rank statistics,
  the simultaneous ECDF band of Säilynoja et al. (2022) and a chi-square test;
- ``tarp``: TARP expected coverage of the joint posterior (Lemos et al. 2023),
  which catches wrong dependence between latents that per-scalar SBC misses;
- ``geweke``: Geweke's joint-distribution test of an MCMC kernel.

``simulate`` runs the simulations once, and ``sbc_test`` / ``tarp_test`` test
the same simulations both ways. Results have ``summary()``, ``plot(path)``
and ``passed``.
"""

from ppl.inference.calibration import draws, ecdf_bands, observed, plots
from ppl.inference.calibration.ecdf_bands import EcdfBand, chi_square_p_values, ecdf_band, ecdf_p_values
from ppl.inference.calibration.geweke import DefaultStatistics, GewekeResult, geweke
from ppl.inference.calibration.plots import plot_geweke, plot_sbc, plot_tarp
from ppl.inference.calibration.sbc import SBCResult, rank_statistics, sbc, sbc_test
from ppl.inference.calibration.simulate import Simulations, simulate
from ppl.inference.calibration.tarp import TARPResult, coverage_ranks, tarp, tarp_test

__all__ = [
    "sbc",
    "sbc_test",
    "SBCResult",
    "rank_statistics",
    "tarp",
    "tarp_test",
    "TARPResult",
    "coverage_ranks",
    "geweke",
    "GewekeResult",
    "DefaultStatistics",
    "simulate",
    "Simulations",
    "EcdfBand",
    "ecdf_band",
    "ecdf_p_values",
    "chi_square_p_values",
    "plot_sbc",
    "plot_tarp",
    "plot_geweke",
    "draws",
    "ecdf_bands",
    "observed",
    "plots",
]
