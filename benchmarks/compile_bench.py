"""(B) Compile time as models grow: the first call of
``jax.jit(jax.grad(log_density))`` for a chain of n scalar sites
``x_i ~ Normal(x_{i-1}, 1)`` written as n ``ppl.sample`` calls in a Python loop."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
from numpyro.infer.util import log_density

import ppl
from ppl import dist
from benchmarks.timing import timed

__all__ = ["run", "CHAINS"]


def ppl_chain(n):
    """A fresh ppl model (so nothing is cached) and its log density."""

    @ppl.gen
    def chain():
        x = 0.0
        for i in range(n):
            x = ppl.sample(f"x{i}", dist.Normal(x, 1.0))
        return x

    return lambda choices: chain.assess(choices, ())[0]


def numpyro_chain(n):
    def chain():
        x = 0.0
        for i in range(n):
            x = numpyro.sample(f"x{i}", nd.Normal(x, 1.0))
        return x

    return lambda choices: log_density(chain, (), {}, choices)[0]


def hand_chain(n):
    def log_density_fn(choices):
        x, total = 0.0, 0.0
        for i in range(n):
            value = choices[f"x{i}"]
            total = total + (-0.5 * (value - x) ** 2 - 0.5 * jnp.log(2 * jnp.pi))
            x = value
        return total

    return log_density_fn


CHAINS = {"ppl": ppl_chain, "hand-written JAX": hand_chain, "NumPyro": numpyro_chain}


def _measure(make, n):
    choices = {f"x{i}": jnp.float32(0.1 * i) for i in range(n)}
    first, grad = timed(jax.jit(jax.grad(make(n))), choices)
    start = time.perf_counter()
    lowered = jax.jit(jax.grad(make(n))).lower(choices)  # a fresh model again: trace + lower
    lower = time.perf_counter() - start
    start = time.perf_counter()
    lowered.compile()
    compile_ = time.perf_counter() - start
    expected = -choices["x0"] + (choices["x1"] - choices["x0"] if n > 1 else 0.0)
    assert np.allclose(grad["x0"], expected, atol=1e-5), (make, n, grad["x0"], expected)
    return first, lower, compile_


def run(sizes, log=print):
    """Markdown lines (first-call seconds per system and n, ppl's growth) and
    ``{(system, n): (first call, trace+lower, compile) seconds}``."""
    for make in CHAINS.values():  # warm JAX's own caches (jnp helpers) for every system
        _measure(make, 2)
    results = {}
    for index, n in enumerate(sizes):
        names = list(CHAINS)
        names = names[index % len(names):] + names[: index % len(names)]
        for name in names:
            results[name, n] = _measure(CHAINS[name], n)
            log(f"[compile] n={n:4d} {name:18s} first call {results[name, n][0]:6.2f} s")
    lines = [
        "| n sites | system | first call s | trace+lower s | XLA compile s | ms per site (first call) |",
        "|---|---|---|---|---|---|",
    ]
    for n in sizes:
        for name in CHAINS:
            first, lower, compile_ = results[name, n]
            lines.append(f"| {n} | {name} | {first:.2f} | {lower:.2f} | {compile_:.2f} | {first / n * 1e3:.1f} |")
    growth = [
        f"{a}→{b}: ×{results['ppl', b][0] / results['ppl', a][0]:.2f} (n ×{b / a:.1f})" for a, b in zip(sizes, sizes[1:])
    ]
    if len(sizes) > 1:
        slope = np.polyfit(np.log(sizes), np.log([results["ppl", n][0] for n in sizes]), 1)[0]
        lines += ["", f"ppl growth of the first call: {'; '.join(growth)}; log-log slope {slope:.2f} (1 = linear)."]
    return lines, results
