"""Markov chain Monte Carlo: kernels on traces and on log densities, warmup,
and the chain runner: ``from ppl.inference import mcmc``."""

from ppl.inference.mcmc.adaptation import AdaptationState, find_reasonable_step_size, window_adaptation, window_schedule
from ppl.inference.mcmc.calls import hmc, mala, nuts
from ppl.inference.mcmc.hmc import HMCInfo, HMCState, hmc_kernel, hmc_step
from ppl.inference.mcmc.initialise import InitializationError
from ppl.inference.mcmc.kernel import Kernel
from ppl.inference.mcmc.mala import MALAInfo, mala_kernel, mala_step
from ppl.inference.mcmc.nuts import NUTSInfo, nuts_kernel, nuts_step
from ppl.inference.mcmc.result import MCMCResult
from ppl.inference.mcmc.runner import RunState, run
from ppl.inference.mcmc.sampling import ChainState

__all__ = [
    "nuts",
    "hmc",
    "mala",
    "run",
    "RunState",
    "MCMCResult",
    "ChainState",
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
    "window_adaptation",
    "window_schedule",
    "find_reasonable_step_size",
]
