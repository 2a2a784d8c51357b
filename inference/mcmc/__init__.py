"""Markov chain Monte Carlo: ``from ppl.inference import mcmc``.

- High-level calls on a model and its observations: ``nuts``, ``hmc``,
  ``mala`` (warmup by Stan's windowed adaptation; many chains in one compiled
  program), and ``run`` for any kernel. Results: ``MCMCResult``.
- Gradient kernels on a log density over R^n (``log_density_fn(position)``):
  ``nuts_kernel``, ``hmc_kernel``, ``mala_kernel`` and their ``*_step``
  functions with the parameters as arguments.
- Trace kernels (Gen's programmable MCMC) move a ``ppl.Trace`` through the
  GFI: ``mh`` (resimulation or a custom proposal), ``gibbs`` (enumerative,
  also over the elements of a ``gf.vmap``), ``involutive``; ``cycle``,
  ``mixture`` and ``on_trace`` (a position kernel on a block of addresses)
  compose them.
"""

from ppl.inference.mcmc.adaptation import (
    AdaptationState,
    WindowAdaptation,
    find_reasonable_step_size,
    window_adaptation,
    window_schedule,
)
from ppl.inference.mcmc.calls import hmc, mala, nuts
from ppl.inference.mcmc.compose import (
    BlockInfo,
    BlockState,
    CycleInfo,
    CycleState,
    MixtureInfo,
    MixtureState,
    cycle,
    mixture,
    on_trace,
)
from ppl.inference.mcmc.gibbs import GibbsInfo, GibbsState, gibbs
from ppl.inference.mcmc.hmc import HMCInfo, HMCState, hmc_kernel, hmc_step
from ppl.inference.mcmc.initialise import InitializationError
from ppl.inference.mcmc.involutive import involutive
from ppl.inference.mcmc.kernel import Kernel
from ppl.inference.mcmc.mala import MALAInfo, mala_kernel, mala_step
from ppl.inference.mcmc.nuts import NUTSInfo, nuts_kernel, nuts_step
from ppl.inference.mcmc.result import MCMCResult
from ppl.inference.mcmc.runner import RunState, run
from ppl.inference.mcmc.sampling import ChainState
from ppl.inference.mcmc.trace_kernels import MHInfo, MHState, mh

__all__ = [
    "nuts",
    "hmc",
    "mala",
    "run",
    "MCMCResult",
    "ChainState",
    "RunState",
    "InitializationError",
    "Kernel",
    "HMCState",
    "HMCInfo",
    "NUTSInfo",
    "MALAInfo",
    "hmc_kernel",
    "hmc_step",
    "nuts_kernel",
    "nuts_step",
    "mala_kernel",
    "mala_step",
    "AdaptationState",
    "WindowAdaptation",
    "window_adaptation",
    "window_schedule",
    "find_reasonable_step_size",
    "mh",
    "gibbs",
    "involutive",
    "cycle",
    "mixture",
    "on_trace",
    "MHState",
    "MHInfo",
    "GibbsState",
    "GibbsInfo",
    "CycleState",
    "CycleInfo",
    "MixtureState",
    "MixtureInfo",
    "BlockState",
    "BlockInfo",
]
