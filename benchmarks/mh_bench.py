"""(D) One Metropolis-Hastings step on a 100-site model: ppl's ``regenerate``
vs the same step hand-written in JAX, per-step time inside one jitted
``lax.scan``, compile time, and a check that both sample the right target.

The model is a Gaussian random walk of 100 scalar latents, each its own
``ppl.sample(f"z{i}", ...)``, observed through one vector site ``y``:
``z0 ~ Normal(0, 1)``, ``z_i ~ Normal(z_{i-1}, 0.5)``, ``y ~ Normal(z, 1)``.
One step redraws ``z37`` from its prior conditional ``Normal(z36, 0.5)`` and
accepts with probability ``min(1, exp(log_weight))``. The chain on ``z37``
(every other site fixed) targets a Gaussian known in closed form.
"""

import collections
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

import ppl
from ppl import dist
from benchmarks.timing import interleaved, summary, timed

__all__ = ["run", "make_ppl_model", "make_data", "ppl_chain", "hand_chain", "BASELINE", "PPL", "SITE", "STEPS", "NUM_LATENTS"]

NUM_LATENTS, SITE = 100, 37
INIT_SCALE, STEP_SCALE, NOISE_SCALE = 1.0, 0.5, 1.0
STEPS = 2000  # MH steps per timed call (one jitted lax.scan)
BURN_IN = 200  # steps dropped from each chain in the sanity check
BASELINE, PPL = "hand-written JAX", "ppl regenerate"
BODY_RUNS = collections.Counter()  # Python executions of the ppl model body


def make_ppl_model(num_latents=NUM_LATENTS):
    """A fresh model object (nothing compiled for another is reused); its body
    counts its own Python executions in ``BODY_RUNS``."""

    @ppl.gen
    def random_walk():
        BODY_RUNS["random_walk"] += 1
        z, zs = 0.0, []
        for i in range(num_latents):
            z = ppl.sample(f"z{i}", dist.Normal(z, STEP_SCALE if i else INIT_SCALE))
            zs.append(z)
        return ppl.sample("y", dist.Normal(jnp.stack(zs), NOISE_SCALE))

    return random_walk


def make_data(seed=0):
    """Observations ``y`` drawn from the model (NumPy RNG), in the default float dtype."""
    rng = np.random.default_rng(seed)
    scales = np.r_[INIT_SCALE, np.full(NUM_LATENTS - 1, STEP_SCALE)]
    z = np.cumsum(rng.normal(0.0, scales))
    return jnp.asarray(z + rng.normal(0.0, NOISE_SCALE, NUM_LATENTS), dtype=jnp.result_type(float))


# ----- the two systems: fn(key, state) -> (state, (z37 per step, accepted per step)) --------


def ppl_chain(model, steps=STEPS):
    """``steps`` MH steps through the GFI: regenerate ``z37``, accept or reject."""
    selection = ppl.select(f"z{SITE}")

    def step(trace, key):
        proposal_key, accept_key = jax.random.split(key)
        proposed, log_weight = model.regenerate(proposal_key, trace, selection, trace.args)
        accept = jnp.log(jax.random.uniform(accept_key)) < log_weight
        trace = jax.tree.map(lambda new, old: jnp.where(accept, new, old), proposed, trace)
        return trace, (trace.choices[f"z{SITE}"], accept)

    return jax.jit(lambda key, trace: jax.lax.scan(step, trace, jax.random.split(key, steps)))


def hand_log_density(z, y):
    """The model's log density of the 100 latents ``z`` and observations ``y``."""
    prior = norm.logpdf(z[0], 0.0, INIT_SCALE) + jnp.sum(norm.logpdf(z[1:], z[:-1], STEP_SCALE))
    return prior + jnp.sum(norm.logpdf(y, z, NOISE_SCALE))


def hand_weight(z, log_density, proposed, y):
    """``(new z, its log density, log MH ratio)`` of the proposal ``z37 -> proposed``."""
    parent = z[SITE - 1]
    new_z = z.at[SITE].set(proposed)
    new_log_density = hand_log_density(new_z, y)
    log_q = lambda value: norm.logpdf(value, parent, STEP_SCALE)
    return new_z, new_log_density, new_log_density - log_density - log_q(proposed) + log_q(z[SITE])


def hand_chain(steps=STEPS):
    """The same MH steps hand-written: state ``(z, log density, y)``."""

    def step(state, key):
        z, log_density, y = state
        proposal_key, accept_key = jax.random.split(key)
        proposed = z[SITE - 1] + STEP_SCALE * jax.random.normal(proposal_key, dtype=z.dtype)
        new_z, new_log_density, log_weight = hand_weight(z, log_density, proposed, y)
        accept = jnp.log(jax.random.uniform(accept_key)) < log_weight
        z = jnp.where(accept, new_z, z)
        log_density = jnp.where(accept, new_log_density, log_density)
        return (z, log_density, y), (z[SITE], accept)

    return jax.jit(lambda key, state: jax.lax.scan(step, state, jax.random.split(key, steps)))


def _initial_states(model, y):
    """The same starting point for both: ppl's trace given ``y``, and its values as a vector."""
    trace, _ = model.generate(jax.random.key(0), {"y": y}, ())
    z = jnp.stack([trace.choices[f"z{i}"] for i in range(NUM_LATENTS)])
    return {PPL: trace, BASELINE: (z, hand_log_density(z, y), y)}


def _fresh(name, y):
    """A fresh jitted chain (a fresh ppl model) and its initial state."""
    model = make_ppl_model()
    return (ppl_chain(model) if name == PPL else hand_chain()), _initial_states(model, y)[name]


def _compile_seconds(name, y):
    """(trace + lower, XLA compile) seconds of a fresh chain, and the ppl model body's runs while tracing."""
    fresh, state = _fresh(name, y)
    BODY_RUNS.clear()
    start = time.perf_counter()
    lowered = fresh.lower(jax.random.key(0), state)
    middle = time.perf_counter()
    lowered.compile()
    return middle - start, time.perf_counter() - middle, BODY_RUNS["random_walk"]


# ----- checks -----------------------------------------------------------------------


def _conditional(z, y):
    """Mean and variance of the target of the z37 chain: p(z37 | z36, z38, y37)."""
    precision = 2 / STEP_SCALE**2 + 1 / NOISE_SCALE**2
    mean = ((z[SITE - 1] + z[SITE + 1]) / STEP_SCALE**2 + y[SITE] / NOISE_SCALE**2) / precision
    return float(mean), float(1 / precision)


def _batch_means(series, num_batches=20):
    """Mean and its Monte Carlo standard error from ``series`` (chains, steps), by batch means per chain."""
    chains, steps = series.shape
    size = steps // num_batches
    batches = series[:, : size * num_batches].reshape(chains, num_batches, size).mean(axis=2).ravel()
    return batches.mean(), batches.std(ddof=1) / np.sqrt(batches.size)


def _same_weight(model, y):
    """|ppl's log weight - the hand-written one| for one regenerate of z37 from the initial trace."""
    trace = _initial_states(model, y)[PPL]
    z, log_density, _ = _initial_states(model, y)[BASELINE]
    proposed, log_weight = model.regenerate(jax.random.key(3), trace, ppl.select(f"z{SITE}"), ())
    _, _, expected = hand_weight(z, log_density, proposed.choices[f"z{SITE}"], y)
    return float(abs(log_weight - expected)), float(expected), max(1.0, abs(float(log_density)))


def sanity_check(trajectories, z, y, k=5.0):
    """Rows of the check: each system's z37 chains (after burn-in), mean and
    variance against the closed form with batch-means standard errors; acceptance rates."""
    mean, variance = _conditional(z, y)
    rows, ok = [], True
    for name, (values, accepted) in trajectories.items():
        values = np.asarray(values, np.float64)[:, BURN_IN:]
        estimate, se = _batch_means(values)
        square, se_square = _batch_means((values - mean) ** 2)
        z_mean, z_var = (estimate - mean) / se, (square - variance) / se_square
        passed = max(abs(z_mean), abs(z_var)) < k
        ok &= passed
        rows.append(
            f"| {name} | {values.size:,} | {estimate:.4f} ± {se:.4f} ({z_mean:+.2f}) "
            f"| {square:.4f} ± {se_square:.4f} ({z_var:+.2f}) | {np.mean(accepted):.3f} | {'pass' if passed else 'FAIL'} |"
        )
    header = [
        f"Sanity check (|z| < {k:g} required): the z37 chains of the timed runs ({BURN_IN} burn-in steps dropped), "
        f"against the closed-form target p(z37 | z36, z38, y37) = Normal({mean:.4f}, variance {variance:.4f}); "
        "standard errors by batch means (20 batches per chain).",
        "",
        "| system | draws | mean (z) | E (z37 - mean)² (z) | acceptance | check |",
        "|---|---|---|---|---|---|",
    ]
    return header + rows, ok


# ----- the run ----------------------------------------------------------------------


def run(repeats=15, log=print):
    """Markdown lines, whether the sanity check passed, and ``{system: median seconds per step}``."""
    y = make_data()
    model = make_ppl_model()
    chains = {PPL: ppl_chain(model), BASELINE: hand_chain()}
    states = _initial_states(model, y)
    for name, chain in chains.items():  # compile, warm up (and warm JAX's own caches for the compile timing)
        timed(chain, jax.random.key(999), states[name])
    log(f"[mh] compile times (fresh functions), then {repeats} interleaved repeats of {STEPS} steps")
    compile_seconds = {name: _compile_seconds(name, y) for name in (BASELINE, PPL)}
    keys = [jax.random.key(1000 + r) for r in range(repeats)]
    outputs, cpu = {name: [] for name in chains}, {name: [] for name in chains}

    def call(name):
        def one(r):
            start = time.process_time()
            out = jax.block_until_ready(chains[name](keys[r], states[name])[1])
            cpu[name].append(time.process_time() - start)
            outputs[name].append(out)
            return out

        return one

    times, _ = interleaved({name: call(name) for name in chains}, repeats)
    (base, _), (cpu_base, _) = summary(times[BASELINE]), summary(cpu[BASELINE])
    rows, medians = [], {}
    for name in chains:
        (median, iqr), (cpu_median, _) = summary(times[name]), summary(cpu[name])
        medians[name] = median / STEPS
        lower, compile_, body_runs = compile_seconds[name]
        runs = f"{body_runs}" if name == PPL else "-"
        rows.append(
            f"| {name} | {median / STEPS * 1e6:.2f} | {iqr / STEPS * 1e6:.2f} | {median / base:.2f} "
            f"| {cpu_median / STEPS * 1e6:.2f} | {cpu_median / cpu_base:.2f} | {lower:.2f} | {compile_:.2f} | {runs} |"
        )
        log(f"  {name:20s} {median / STEPS * 1e6:8.2f} us/step  x{median / base:5.2f}")
    trajectories = {name: [np.stack([np.asarray(o[i]) for o in outs]) for i in (0, 1)] for name, outs in outputs.items()}
    sanity, ok = sanity_check(trajectories, np.asarray(states[BASELINE][0]), np.asarray(y))
    difference, expected, scale = _same_weight(model, y)
    same = difference <= 1e-5 * scale  # float32 rounding of sums of ~100 terms of this size
    ok &= same
    lines = [
        "| system | µs per step (median) | IQR µs | × hand-written | CPU µs per step | × hand-written (CPU) "
        "| trace+lower s | XLA compile s | model body runs per trace |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"One regenerate of z37 from the initial trace: ppl's log weight equals the hand-written MH ratio for the same "
        f"proposed value: **{'yes' if same else 'NO'}** (|difference| {difference:.2e}, weight {expected:.3f}).",
        "",
        *sanity,
    ]
    return lines, ok, medians
