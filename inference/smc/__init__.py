"""Sequential Monte Carlo: ``from ppl.inference import smc``.

- ``particle_filter`` on a model that makes one ``gf.scan(T)`` over time
  (bootstrap or a custom proposal, adaptive resampling, resample-move), and
  its online form ``filter_init`` / ``filter_step``; ``trajectories`` traces
  particles back through their ancestors, ``backward_smoothing`` draws
  trajectories of the smoothing distribution (FFBSi).
- Programmable SMC (``particles``): a ``ParticleCollection`` of traces and
  the steps of a user's own SMC loop: ``init``, ``extend``, ``change``,
  ``resample``, ``rejuvenate``; each keeps the estimate of Z unbiased.
- ``tempered``: likelihood-tempered SMC for static models (adaptive
  schedule, HMC / MALA / random-walk moves tuned from the particles, AIS
  with a fixed schedule and no resampling, waste-free SMC).
- ``pmmh``: particle marginal Metropolis-Hastings over a state-space model's
  static parameters, and ``particle_gibbs``: conditional SMC with ancestor
  sampling over the scan's states; both ``Kernel``s for ``mcmc.run``.
- Resampling schemes (``resampling``): multinomial, systematic, stratified,
  residual, all O(N log N) or better.
"""

from ppl.inference.smc import resampling
from ppl.inference.smc.filtering import FilterInfo, FilterSettings, FilterState, filter_init, filter_step
from ppl.inference.smc.particle_filter import ParticleFilterResult, particle_filter, trajectories
from ppl.inference.smc.particles import ParticleCollection, change, extend, init, rejuvenate, resample
from ppl.inference.smc.particle_gibbs import ParticleGibbsInfo, ParticleGibbsState, particle_gibbs
from ppl.inference.smc.pmcmc import PMMHInfo, PMMHState, pmmh
from ppl.inference.smc.resampling import effective_sample_size
from ppl.inference.smc.smoothing import backward_smoothing
from ppl.inference.smc.tempered import TemperedResult, next_temperature, tempered

__all__ = [
    "resampling",
    "ParticleCollection",
    "init",
    "extend",
    "change",
    "resample",
    "rejuvenate",
    "effective_sample_size",
    "FilterInfo",
    "FilterSettings",
    "FilterState",
    "filter_init",
    "filter_step",
    "ParticleFilterResult",
    "particle_filter",
    "trajectories",
    "backward_smoothing",
    "ParticleGibbsState",
    "ParticleGibbsInfo",
    "particle_gibbs",
    "PMMHState",
    "PMMHInfo",
    "pmmh",
    "TemperedResult",
    "tempered",
    "next_temperature",
]
