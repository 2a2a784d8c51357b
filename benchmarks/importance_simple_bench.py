"""(A2) Importance sampling on the simplest formulation: three scalar sites
and one vector observation site, ``ys ~ Normal(a + b xs + c xs^2, 0.05)``.
Steady-state time and the first call (trace + compile + run of a fresh
model, what a notebook user pays for each new model), ppl vs hand-written
JAX vs NumPyro, interleaved."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
from numpyro import handlers
from numpyro.infer.util import log_density

import ppl
from ppl import dist
from benchmarks.timing import interleaved, summary, timed

__all__ = ["run", "BASELINE", "SCALE"]

BASELINE = "hand-written JAX"
SCALE, NUM_POINTS = 0.05, 50


def make_data():
    xs = jnp.linspace(-1.0, 1.0, NUM_POINTS)
    rng = np.random.default_rng(1)
    return xs, jnp.asarray(0.4 - 0.9 * xs + 0.7 * xs**2 + SCALE * rng.normal(size=NUM_POINTS), xs.dtype)


def make_ppl_model():
    @ppl.gen
    def model(xs):
        a = ppl.sample("a", dist.Normal(0.0, 1.0))
        b = ppl.sample("b", dist.Normal(0.0, 1.0))
        c = ppl.sample("c", dist.Normal(0.0, 1.0))
        return ppl.sample("ys", dist.Normal(a + b * xs + c * xs**2, SCALE))

    return model


def ppl_call(model):
    def call(key, xs, ys, n):
        result = ppl.inference.importance(key, model, (xs,), {"ys": ys}, n)
        c = result.particles.choices
        return (c["a"], c["b"], c["c"]), result.log_weights

    return call


def hand(key, xs, ys, n):
    a, b, c = (jax.random.normal(k, (n,)) for k in jax.random.split(key, 3))
    mean = a[:, None] + b[:, None] * xs + c[:, None] * xs**2
    log_weights = jnp.sum(-0.5 * ((ys - mean) / SCALE) ** 2 - jnp.log(SCALE) - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
    return (a, b, c), log_weights


def numpyro_model(xs, ys=None):
    a, b, c = (numpyro.sample(name, nd.Normal(0.0, 1.0)) for name in "abc")
    numpyro.sample("ys", nd.Normal(a + b * xs + c * xs**2, SCALE).to_event(1), obs=ys)


def numpyro_call(key, xs, ys, n):
    def particle(k):
        trace = handlers.trace(handlers.seed(numpyro_model, k)).get_trace(xs, ys)
        latents = {name: trace[name]["value"] for name in "abc"}
        log_joint, _ = log_density(numpyro_model, (xs, ys), {}, latents)
        log_prior = sum(nd.Normal(0.0, 1.0).log_prob(v) for v in latents.values())
        return tuple(latents.values()), log_joint - log_prior

    return jax.vmap(particle)(jax.random.split(key, n))


def _fresh(name, n):
    """A fresh jitted call (a fresh model object for ppl): nothing cached is reused."""
    if name == BASELINE:
        return jax.jit(lambda k, x, y: hand(k, x, y, n))
    if name == "NumPyro":
        return jax.jit(lambda k, x, y: numpyro_call(k, x, y, n))
    call = ppl_call(make_ppl_model())
    if name == "ppl":  # the public call, which jits inside
        return lambda k, x, y: call(k, x, y, n)
    return jax.jit(lambda k, x, y: call(k, x, y, n))


SYSTEMS = (BASELINE, "ppl", "ppl inside jax.jit", "NumPyro")


def _first_calls(n, xs, ys, repeats):
    calls = {name: (lambda r, name=name: _fresh(name, n)(jax.random.key(r), xs, ys)) for name in SYSTEMS}
    times, _ = interleaved(calls, repeats)
    return {name: summary(times[name])[0] for name in SYSTEMS}


def _steady(n, xs, ys, repeats):
    fns = {name: _fresh(name, n) for name in SYSTEMS}
    for fn in fns.values():
        timed(fn, jax.random.key(0), xs, ys)
    calls = {name: (lambda r, f=fn: f(jax.random.key(100 + r), xs, ys)) for name, fn in fns.items()}
    times, last = interleaved(calls, repeats)
    return {name: summary(times[name]) for name in SYSTEMS}, last


def _mean_log_weight_z(last):
    """All systems estimate E[log w] under the prior: z of each against hand-written."""
    stats = {name: (float(np.mean(out[1])), float(np.std(out[1]) / np.sqrt(out[1].size))) for name, out in last.items()}
    base_mean, base_se = stats[BASELINE]
    return {name: (mean - base_mean) / np.hypot(se, base_se) if name != BASELINE else 0.0 for name, (mean, se) in stats.items()}


def run(sizes, repeats_for, first_call_size=100_000, first_call_repeats=5, log=print):
    """Markdown lines, whether every system agrees with hand-written JAX
    (|z| < 5), and ``{(N, system): median seconds}`` with ``first call`` rows."""
    xs, ys = make_data()
    _fresh(BASELINE, 16)(jax.random.key(0), xs, ys)  # warm JAX's own caches
    rows, medians, ok = [], {}, True
    for n in sizes:
        log(f"[importance, simplest formulation] N={n:,}")
        stats, last = _steady(n, xs, ys, repeats_for(n))
        z = _mean_log_weight_z(last)
        base = stats[BASELINE][0]
        for name in SYSTEMS:
            median, iqr = stats[name]
            medians[n, name] = median
            ok &= abs(z[name]) < 5
            rows.append(f"| {n:,} | {name} | {median * 1e3:.2f} | {iqr * 1e3:.2f} | {median / base:.2f} | {z[name]:+.2f} |")
    log(f"[importance, simplest formulation] first calls at N={first_call_size:,}")
    first = _first_calls(first_call_size, xs, ys, first_call_repeats)
    first_rows = [f"| {name} | {first[name]:.3f} | {first[name] / first[BASELINE]:.2f} |" for name in SYSTEMS]
    for name in SYSTEMS:
        medians["first call", name] = first[name]
    lines = [
        "| N | system | median ms | IQR ms | × hand-written | z of mean log w vs hand |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"First call at N = {first_call_size:,} (a fresh model and jit: trace + compile + run; median of "
        f"{first_call_repeats} interleaved repeats):",
        "",
        "| system | seconds | × hand-written |",
        "|---|---|---|",
        *first_rows,
    ]
    return lines, ok, medians
