"""(D) One Metropolis-Hastings step on a 100-site model: ppl's ``regenerate``
vs the same step hand-written in JAX (systems in ``mh_systems.py``): time per
step inside one jitted ``lax.scan``, compile time, how often the model body
runs, and checks that every system samples the right target."""

import time

import jax
import numpy as np

import ppl
from benchmarks import mh_systems as systems
from benchmarks.timing import interleaved, summary, timed

__all__ = ["run", "sanity_check", "BASELINE", "PPL", "SITE", "STEPS", "NUM_LATENTS"]

BASELINE, PPL, SITE, STEPS, NUM_LATENTS = systems.BASELINE, systems.PPL, systems.SITE, systems.STEPS, systems.NUM_LATENTS
BURN_IN = 200  # steps dropped from each chain in the sanity check
_MIMIC = "hand, 100 scalars + ppl's keys"


def _compile_seconds(make, kind, y):
    """(trace + lower, XLA compile) seconds of a fresh chain (a fresh ppl model),
    and how many times the ppl model body ran while it was traced."""
    model = systems.make_ppl_model()
    fresh, state = make(model), systems.initial_states(model, y)[kind]
    systems.BODY_RUNS.clear()
    start = time.perf_counter()
    lowered = fresh.lower(jax.random.key(0), state)
    middle = time.perf_counter()
    lowered.compile()
    return middle - start, time.perf_counter() - middle, systems.BODY_RUNS["random_walk"]


def _conditional(z, y):
    """Mean and variance of the target of the z37 chain: p(z37 | z36, z38, y37)."""
    precision = 2 / systems.STEP_SCALE**2 + 1 / systems.NOISE_SCALE**2
    mean = ((z[SITE - 1] + z[SITE + 1]) / systems.STEP_SCALE**2 + y[SITE] / systems.NOISE_SCALE**2) / precision
    return float(mean), float(1 / precision)


def _batch_means(series, num_batches=20):
    """Mean and its Monte Carlo standard error from ``series`` (chains, steps), by batch means per chain."""
    chains, steps = series.shape
    size = steps // num_batches
    batches = series[:, : size * num_batches].reshape(chains, num_batches, size).mean(axis=2).ravel()
    return batches.mean(), batches.std(ddof=1) / np.sqrt(batches.size)


def _same_weight(model, y):
    """One regenerate of z37 from the initial trace against the hand-written MH
    ratio for the same proposed value: (|difference|, weight, tolerance)."""
    states = systems.initial_states(model, y)
    z, log_density, _ = states["vector"]
    proposed, log_weight = model.regenerate(jax.random.key(3), states["ppl"], ppl.select(f"z{SITE}"), ())
    _, _, expected = systems.hand_weight(z, log_density, proposed.choices[f"z{SITE}"], y)
    return float(abs(log_weight - expected)), float(expected), 1e-5 * max(1.0, abs(float(log_density)))


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


def _timed_calls(chains, states, repeats):
    """Interleaved repeats: wall seconds, process CPU seconds and outputs per system."""
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
    return times, cpu, outputs


def run(repeats=15, log=print):
    """Markdown lines, whether the checks passed, and ``{system: median seconds per step}``."""
    y = systems.make_data()
    model = systems.make_ppl_model()
    variants = {**systems.SYSTEMS, **{name: spec[:2] for name, spec in systems.DIAGNOSTICS.items()}}
    starts = systems.initial_states(model, y)
    chains = {name: make(model) for name, (make, _) in variants.items()}
    states = {name: starts[kind] for name, (_, kind) in variants.items()}
    for name, chain in chains.items():  # compile, warm up (and warm JAX's own caches for the compile timing)
        timed(chain, jax.random.key(999), states[name])
    log(f"[mh] compile times (fresh functions), then {repeats} interleaved repeats of {STEPS} steps")
    compile_seconds = {name: _compile_seconds(make, kind, y) for name, (make, kind) in variants.items()}
    times, cpu, outputs = _timed_calls(chains, states, repeats)
    (base, _), (cpu_base, _) = summary(times[BASELINE]), summary(cpu[BASELINE])
    rows, medians = [], {}
    for name in chains:
        (median, iqr), (cpu_median, _) = summary(times[name]), summary(cpu[name])
        medians[name] = median / STEPS
        lower, compile_, body_runs = compile_seconds[name]
        rows.append(
            f"| {name} | {median / STEPS * 1e6:.2f} | {iqr / STEPS * 1e6:.2f} | {median / base:.2f} "
            f"| {cpu_median / STEPS * 1e6:.2f} | {cpu_median / cpu_base:.2f} | {lower:.2f} | {compile_:.2f} "
            f"| {body_runs if name.startswith('ppl') else '-'} |"
        )
        log(f"  {name:34s} {median / STEPS * 1e6:8.2f} us/step  x{median / base:5.2f}")
    trajectories = {name: [np.stack([np.asarray(o[i]) for o in outs]) for i in (0, 1)] for name, outs in outputs.items()}
    sanity, ok = sanity_check({name: trajectories[name] for name in systems.SYSTEMS}, np.asarray(starts["vector"][0]), np.asarray(y))
    difference, expected, tolerance = _same_weight(model, y)
    same = difference <= tolerance  # float32 rounding of sums of ~100 terms of this size
    agree = float(np.mean(trajectories[PPL][0] == trajectories[_MIMIC][0]))
    lines = [
        "| system | µs per step (median) | IQR µs | × hand-written | CPU µs per step | × hand-written (CPU) "
        "| trace+lower s | XLA compile s | model body runs per trace |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *[f"- *{name}*: {spec[2]}" for name, spec in systems.DIAGNOSTICS.items()],
        "",
        f"One regenerate of z37 from the initial trace: ppl's log weight equals the hand-written MH ratio for the same "
        f"proposed value: **{'yes' if same else 'NO'}** (|difference| {difference:.2e}, weight {expected:.3f}). "
        f"ppl's chains and those of *{_MIMIC}* agree step for step on {agree:.1%} of the z37 values "
        "(the same random numbers; float rounding may flip a borderline acceptance).",
        "",
        *sanity,
    ]
    return lines, ok and same, medians
