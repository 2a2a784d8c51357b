"""(I) Particle VI: coin SVGD (no learning rate) against SVGD with plain
gradient steps at a tuned, a too large and a too small learning rate, on the
same target, particles, initial positions and number of steps.

The target is a 10-D Gaussian with a random rotation, scales from 0.1 to 2
(condition number 400) and a mean away from the origin: exact moments, and a
curvature spread that makes one learning rate too large for the narrow
directions while too small for the wide ones. The tuned rate is the best of a
grid (the lowest final kernelised Stein discrepancy); the bad ones are 10x
above and 100x below it. Reported per method: the KSD (RBF kernel of one
fixed bandwidth for all, the median heuristic of exact draws), the error of
the particle mean (|m - mu| / sqrt(tr Sigma)) and of the covariance
(||C - Sigma||_F / ||Sigma||_F) at a few steps, and the wall time of the
whole run of steps (compiled; the metrics are computed outside it).
N exact iid draws give the scale a perfect sampler reaches.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from ppl.inference import vi

__all__ = ["run"]

DIMENSION, NUM_PARTICLES, NUM_STEPS = 10, 100, 2000
CHECKPOINTS = (10, 100, 500, 2000)
GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


def target():
    """(mean, covariance, log density) of the rotated, ill-conditioned Gaussian."""
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(DIMENSION, DIMENSION)))
    scales = np.geomspace(0.1, 2.0, DIMENSION)
    covariance = rotation @ np.diag(scales**2) @ rotation.T
    mean = np.random.default_rng(1).normal(size=DIMENSION)
    precision = jnp.asarray(np.linalg.inv(covariance), jnp.float32)
    centre = jnp.asarray(mean, jnp.float32)
    return mean, covariance, lambda x: -0.5 * (x - centre) @ precision @ (x - centre)


def _kernel(name, log_density, rate):
    return vi.coin_svgd_kernel(log_density) if name == "coin" else vi.svgd_kernel(log_density, rate)


def _runs(log_density):
    """Compiled runs: (positions at every checkpoint) and (final positions only), per algorithm; the rate is an argument."""

    def trajectory(name):
        def fn(x0, rate):
            kernel = _kernel(name, log_density, rate)

            def body(state, _):
                state, _ = kernel.step(state)
                return state, state.positions

            _, positions = jax.lax.scan(body, kernel.init(x0), None, NUM_STEPS)
            return positions[np.array(CHECKPOINTS) - 1]

        return jax.jit(fn)

    def final(name):
        def fn(x0, rate):
            kernel = _kernel(name, log_density, rate)
            return jax.lax.scan(lambda s, _: (kernel.step(s)[0], None), kernel.init(x0), None, NUM_STEPS)[0].positions

        return jax.jit(fn)

    return {name: (trajectory(name), final(name)) for name in ("svgd", "coin")}


def _errors(positions, mean, covariance, gradient_fn, bandwidth):
    x = np.asarray(positions, np.float64)
    if not np.all(np.isfinite(x)):
        return float("nan"), float("nan"), float("nan")
    mean_error = np.linalg.norm(x.mean(0) - mean) / np.sqrt(np.trace(covariance))
    cov_error = np.linalg.norm(np.cov(x.T, bias=True) - covariance) / np.linalg.norm(covariance)
    ksd = float(vi.kernel_stein_discrepancy(positions, gradient_fn(positions), bandwidth))
    return mean_error, cov_error, ksd


def _cell(value, digits=3):
    if not np.isfinite(value):
        return "diverged"
    return f"{value:.{digits}g}"


def run(log=print):
    """(markdown lines, {method: final KSD})."""
    mean, covariance, log_density = target()
    gradient_fn = jax.jit(jax.vmap(jax.grad(log_density)))
    exact = np.random.default_rng(2).multivariate_normal(mean, covariance, NUM_PARTICLES).astype(np.float32)
    bandwidth = float(jax.jit(vi.median_bandwidth)(exact))
    x0 = jax.random.uniform(jax.random.key(0), (NUM_PARTICLES, DIMENSION), minval=-2.0, maxval=2.0)
    runs = _runs(log_density)

    log(f"[svgd] grid of {len(GRID)} learning rates for plain SVGD")
    start = time.perf_counter()
    grid = {}
    for rate in GRID:
        final = runs["svgd"][1](x0, jnp.float32(rate))
        grid[rate] = _errors(final, mean, covariance, gradient_fn, bandwidth)[2]
    grid_seconds = time.perf_counter() - start
    finite = {rate: ksd for rate, ksd in grid.items() if np.isfinite(ksd)}
    tuned = min(finite, key=finite.get)
    methods = [
        ("coin SVGD (no learning rate)", "coin", 0.0),
        (f"SVGD, tuned rate {tuned:g}", "svgd", tuned),
        (f"SVGD, too large {10 * tuned:g}", "svgd", 10 * tuned),
        (f"SVGD, too small {tuned / 100:g}", "svgd", tuned / 100),
    ]
    rows, finals = [], {}
    for label, name, rate in methods:
        trajectory, final = runs[name]
        rate = jnp.float32(rate)
        jax.block_until_ready(final(x0, rate))  # compiles where the grid did not
        seconds = []
        for _ in range(3):
            begin = time.perf_counter()
            jax.block_until_ready(final(x0, rate))
            seconds.append(time.perf_counter() - begin)
        snapshots = trajectory(x0, rate)
        errors = [_errors(snapshots[i], mean, covariance, gradient_fn, bandwidth) for i in range(len(CHECKPOINTS))]
        finals[label] = errors[-1][2]
        ksd = " | ".join(_cell(e[2]) for e in errors)
        moments = " | ".join(f"{_cell(e[0], 2)} / {_cell(e[1], 2)}" for e in errors)
        rows.append(f"| {label} | {ksd} | {moments} | {np.median(seconds):.2f} |")
        log(f"  {label:32s} KSD {ksd}   {np.median(seconds):.2f} s")
    iid = _errors(jnp.asarray(exact), mean, covariance, gradient_fn, bandwidth)
    lines = [
        "## (I) Particle VI: coin SVGD vs SVGD at a tuned, a too large and a too small learning rate",
        "",
        f"A {DIMENSION}-D Gaussian, randomly rotated, scales 0.1 to 2 (condition number 400), mean away from 0; "
        f"{NUM_PARTICLES} particles from the same uniform(-2, 2) start, {NUM_STEPS} steps, RBF kernel with the "
        "median-heuristic bandwidth; SVGD: `vi.svgd_kernel(log_density, rate)` (x <- x + rate phi(x)); coin SVGD: "
        "`vi.coin_svgd_kernel(log_density)`. Tuned rate: the lowest final KSD over the grid "
        f"{', '.join(f'{r:g}' for r in GRID)} ({len(GRID)} runs, {grid_seconds:.1f} s; final KSD "
        + ", ".join(f"{r:g}: {_cell(k)}" for r, k in grid.items())
        + "). KSD: kernelised Stein discrepancy, RBF kernel of one fixed bandwidth "
        f"({bandwidth:.3g}, the median heuristic of exact draws). Mean / cov: |m - mu| / sqrt(tr Sigma) and "
        "||C - Sigma||_F / ||Sigma||_F. Seconds: the whole run of steps, compiled (median of 3 after a first call).",
        "",
        f"| method | KSD {' | KSD '.join(f'@{c}' for c in CHECKPOINTS)} | {' | '.join(f'mean / cov @{c}' for c in CHECKPOINTS)} | seconds |",
        "|---|" + "---|" * (2 * len(CHECKPOINTS) + 1),
        *rows,
        f"| {NUM_PARTICLES} exact iid draws (for scale) | " + " | ".join([_cell(iid[2])] * len(CHECKPOINTS)) + " | "
        + " | ".join([f"{_cell(iid[0], 2)} / {_cell(iid[1], 2)}"] * len(CHECKPOINTS)) + " | |",
        "",
    ]
    return lines, finals
