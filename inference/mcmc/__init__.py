"""Markov chain Monte Carlo: kernels on traces and on log densities, warmup,
and the chain runner: ``from ppl.inference import mcmc``.

Trace kernels (Gen's programmable MCMC) move a ``ppl.Trace`` through the
GFI: ``mh`` (resimulation or a custom proposal), ``gibbs`` (enumerative,
also over the elements of a ``gf.vmap``), ``involutive``; ``cycle``,
``mixture`` and ``on_trace`` (a position kernel on a block of addresses)
compose them.
"""

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
from ppl.inference.mcmc.involutive import involutive
from ppl.inference.mcmc.kernel import Kernel
from ppl.inference.mcmc.trace_kernels import MHInfo, MHState, mh

__all__ = [
    "Kernel",
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
