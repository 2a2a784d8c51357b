"""Markov chain Monte Carlo: kernels on traces and on log densities, warmup,
and the chain runner: ``from ppl.inference import mcmc``."""

from ppl.inference.mcmc.kernel import Kernel

__all__ = ["Kernel"]
