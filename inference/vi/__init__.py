"""Programmable variational inference: ``from ppl.inference import vi``.

Objectives are programs written with ``sim``, ``density``, ``marginal`` and
``normalize``; ADEV turns them into unbiased gradient estimators. Families
(``mean_field``, ``full_rank``, ``amortized``) are generative functions with
parameters; ``fit`` runs an optax optimiser on any objective.
"""

from ppl.inference.vi.constructs import Marginal, Normalized, density, logmeanexp, marginal, normalize, sim
from ppl.inference.vi.families import Latent, NormalFamily, amortized, full_rank, latent_sites, mean_field
from ppl.inference.vi.fit import FitResult, FitState, fit
from ppl.inference.vi.objectives import (
    Objective,
    diwhvi,
    elbo,
    hvi,
    iwelbo,
    iwhvi,
    per_datum,
    renyi,
    rws,
    rws_guide,
    rws_model,
    stl_elbo,
    vimco,
)

__all__ = [
    "sim",
    "density",
    "marginal",
    "normalize",
    "Marginal",
    "Normalized",
    "logmeanexp",
    "Objective",
    "elbo",
    "iwelbo",
    "stl_elbo",
    "vimco",
    "rws",
    "rws_model",
    "rws_guide",
    "renyi",
    "hvi",
    "iwhvi",
    "diwhvi",
    "per_datum",
    "Latent",
    "NormalFamily",
    "latent_sites",
    "mean_field",
    "full_rank",
    "amortized",
    "fit",
    "FitState",
    "FitResult",
]
