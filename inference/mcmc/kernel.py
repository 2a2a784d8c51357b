"""What every MCMC kernel is: a pair of pure functions (BlackJAX's shape).

``init(x) -> state`` builds a kernel's state from a position (gradient
kernels) or a ``ppl.Trace`` (trace kernels); ``step(key, state) -> (state,
info)`` makes one transition. States and infos are NamedTuples of arrays, so
kernels compose (``cycle``, ``mixture``), vmap over chains, and run in
``lax.scan``.
"""

from typing import Callable, NamedTuple

__all__ = ["Kernel"]


class Kernel(NamedTuple):
    """``init(x) -> state`` and ``step(key, state) -> (state, info)``, both pure and jittable."""

    init: Callable
    step: Callable
