"""Programmable variational inference: ``from ppl.inference import vi``.

Objectives are programs written with ``sim``, ``density``, ``marginal`` and
``normalize``; ADEV turns them into unbiased gradient estimators. Families
(``mean_field``, ``full_rank``, ``amortized``, and the normalizing flows
``flow`` and ``amortized_flow``) are generative functions with parameters;
``fit`` runs an optax optimiser on any objective. Particle methods
(``svgd``, ``coin_svgd``; their kernels ``svgd_kernel``, ``coin_svgd_kernel``
on any log density) move a set of particles instead.

A new objective is a program ``(key, params, *args) -> real`` decorated with
``ppl.transforms.expectation``. For example the beta-VAE objective
E_q[log p(x | z)] - beta KL(q || p(z)), which is not in the library:

>>> @ppl.gen
... def model(params):
...     z = ppl.sample("z", dist.Normal(0.0, 1.0))
...     ppl.sample("x", dist.Normal(z, 0.5))
>>> guide = vi.mean_field(model, (None,), {"x": 1.0})
>>> @ppl.transforms.expectation
... def beta_elbo(key, params, observations, beta):
...     latents, log_q = vi.sim(guide, key, (params,))
...     log_p = vi.density(model, ppl.merge(latents, observations), (params,), scale={"z": beta})
...     return log_p - beta * log_q  # log p(x | z) + beta (log p(z) - log q(z))
>>> optimizer = optax.adam(optax.cosine_decay_schedule(0.1, 2000))
>>> result = vi.fit(beta_elbo, guide.init_params(), optimizer, 2000, ({"x": 1.0}, 0.5),
...                 key=jax.random.key(0), progress=False)
>>> # optimum: q(z) proportional to p(x | z)^(1 / beta) p(z) = N(8/9, 1/9) for beta = 1/2
>>> loc, scale = result.params["guide"]["loc"][0], jax.nn.softplus(result.params["guide"]["raw_scale"][0])
>>> bool(abs(loc - 8 / 9) < 0.1 and abs(scale - 1 / 3) < 0.05)
True
"""

from ppl.inference.vi.coin import CoinSVGDState, coin_svgd_kernel
from ppl.inference.vi.constructs import Marginal, Normalized, density, logmeanexp, marginal, normalize, sim
from ppl.inference.vi.families import Latent, NormalFamily, amortized, full_rank, latent_sites, mean_field
from ppl.inference.vi.forward_kl import forward_kl
from ppl.inference.vi.flow_family import Flow, FlowFamily, amortized_flow, flow
from ppl.inference.vi.flow_autoregressive import MADE, InverseAutoregressive, MaskedAutoregressive
from ppl.inference.vi.flow_layers import AffineCoupling, Conditioner, Planar, Radial, SplineCoupling
from ppl.inference.vi.fit import FitDivergedError, FitResult, FitState, fit
from ppl.inference.vi.objectives import (
    Objective,
    averaged,
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
from ppl.inference.vi.particles_vi import ParticleResult, coin_svgd, svgd
from ppl.inference.vi.stein import (
    KernelTerms,
    ParticleKernel,
    SVGDInfo,
    SVGDState,
    kernel_stein_discrepancy,
    median_bandwidth,
    pairwise_kernel,
    rbf_kernel,
    stein_force,
    svgd_kernel,
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
    "forward_kl",
    "vimco",
    "rws",
    "rws_model",
    "rws_guide",
    "renyi",
    "hvi",
    "iwhvi",
    "diwhvi",
    "per_datum",
    "averaged",
    "Latent",
    "NormalFamily",
    "latent_sites",
    "mean_field",
    "full_rank",
    "amortized",
    "flow",
    "amortized_flow",
    "Flow",
    "FlowFamily",
    "Planar",
    "Radial",
    "AffineCoupling",
    "SplineCoupling",
    "MaskedAutoregressive",
    "InverseAutoregressive",
    "Conditioner",
    "MADE",
    "fit",
    "FitState",
    "FitResult",
    "FitDivergedError",
    "svgd",
    "coin_svgd",
    "ParticleResult",
    "svgd_kernel",
    "coin_svgd_kernel",
    "ParticleKernel",
    "SVGDState",
    "CoinSVGDState",
    "SVGDInfo",
    "rbf_kernel",
    "pairwise_kernel",
    "KernelTerms",
    "stein_force",
    "kernel_stein_discrepancy",
    "median_bandwidth",
]
