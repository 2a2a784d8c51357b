"""(A) Importance sampling on polynomial regression with outliers: ppl vs
hand-written JAX vs NumPyro, steady-state time, compile time, and a check
that all compute statistically the same thing."""

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from benchmarks import systems
from benchmarks.timing import interleaved, summary, timed

__all__ = ["run", "SYSTEMS", "BASELINE"]

BASELINE = "hand-written JAX"
_ppl_full = jax.jit(systems.ppl_importance, static_argnums=3)  # the program ppl's public call compiles
# name -> fn(key, xs, ys, num_particles) -> (latents, log_weights)
SYSTEMS = {
    BASELINE: systems.hand_importance,
    "ppl": lambda *a: systems.ppl_outputs(systems.ppl_importance(*a)),
    # a user's jit around the call, keeping only latents and log weights (XLA drops the rest)
    "ppl inside jax.jit": jax.jit(lambda *a: systems.ppl_outputs(systems.ppl_importance(*a)), static_argnums=3),
    "NumPyro": systems.numpyro_importance,
}
_ppl_public = SYSTEMS["ppl"]
# name -> n -> a fresh jitted fn(key, xs, ys) (fresh model object for ppl), for compile timing
_FRESH = {
    BASELINE: lambda n: jax.jit(lambda k, x, y: systems._hand(k, x, y, n)),
    "ppl": lambda n: jax.jit(lambda k, x, y: systems.ppl_importance(k, x, y, n, model=systems.make_ppl_model())),
    "ppl inside jax.jit": lambda n: jax.jit(
        lambda k, x, y: systems.ppl_outputs(systems.ppl_importance(k, x, y, n, model=systems.make_ppl_model()))
    ),
    "NumPyro": lambda n: jax.jit(lambda k, x, y: systems._numpyro(k, x, y, n)),
}
_COST_SIZE = 65536  # one chunk: XLA's cost analysis counts a while loop's body once


def _compile_seconds(name, n, xs, ys):
    """(trace + lower, XLA compile) seconds of a fresh jitted function."""
    fresh = _FRESH[name](n)
    start = time.perf_counter()
    lowered = fresh.lower(jax.random.key(0), xs, ys)
    middle = time.perf_counter()
    lowered.compile()
    return middle - start, time.perf_counter() - middle


def _log_weights(out):
    return out.log_weights if hasattr(out, "log_weights") else out[-1]


def _cost_per_particle(name, fn, xs, ys, n):
    """XLA's cost analysis of the compiled program (flops, bytes accessed), per particle."""
    jitted = _ppl_full if fn is _ppl_public else fn
    if not hasattr(jitted, "lower"):
        jitted = jax.jit(fn, static_argnums=3)
    cost = jitted.lower(jax.random.key(0), xs, ys, n).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return cost.get("flops", float("nan")) / n, cost.get("bytes accessed", float("nan")) / n


def _time_size(calls, xs, ys, n, repeats):
    keys = [jax.random.key(1000 + r) for r in range(repeats)]
    for name in calls:  # compile (timed separately, on fresh objects) and warm up
        timed(calls[name], jax.random.key(999), xs, ys, n)
    times, last = interleaved({name: (lambda r, f=f: f(keys[r], xs, ys, n)) for name, f in calls.items()}, repeats)
    return times, last


def _same_draws(ppl_out, mimic_out):
    """Does the mimic draw exactly ppl's latents (and so reproduce its key scheme)?"""
    same = all(np.array_equal(ppl_out[0][name], mimic_out[0][name]) for name in ("coeffs", "outlier"))
    close = np.allclose(ppl_out[1], mimic_out[1], rtol=1e-5)
    return f"ppl's latents equal those of 'hand + ppl's keys' bit for bit: {same}; log weights to 1e-5: {close}"


def _stats(log_weights):
    log_weights = np.asarray(log_weights, np.float64)
    n = len(log_weights)
    log_z = logsumexp(log_weights) - np.log(n)
    ess = np.exp(2 * logsumexp(log_weights) - logsumexp(2 * log_weights))
    return dict(
        log_z=float(log_z),
        ess=float(ess),
        se_log_z=float(np.sqrt(max(1 / ess - 1 / n, 0.0))),  # delta method
        mean=float(log_weights.mean()),
        se_mean=float(log_weights.std() / np.sqrt(n)),
    )


def sanity_check(outputs, xs, ys, n, k=5.0, subset_points=2):
    """Rows of the check that the systems compute the same thing, and whether all pass.

    On the full data, prior importance sampling has ESS ~ 1, so its log Z
    estimate has no usable standard error; the mean log weight does, and is
    compared between systems. The log Z estimates are compared with the exact
    value on a subset of ``subset_points`` points (2^n outlier patterns enumerated).
    """
    rows, ok = [], True
    stats = {name: _stats(_log_weights(out)) for name, out in outputs.items()}
    base = stats[BASELINE]
    idx = np.linspace(0, len(xs) - 1, subset_points).round().astype(int)
    sub_xs, sub_ys = xs[idx], ys[idx]
    exact = systems.exact_log_marginal_likelihood(sub_xs, sub_ys)
    for name, out in outputs.items():
        s = stats[name]
        z_mean = (s["mean"] - base["mean"]) / np.hypot(s["se_mean"], base["se_mean"]) if name != BASELINE else 0.0
        latents = out[0]
        rate = float(jnp.mean(latents["outlier"]))
        z_rate = (rate - systems.OUTLIER_PROB) / np.sqrt(systems.OUTLIER_PROB * (1 - systems.OUTLIER_PROB) / latents["outlier"].size)
        sub = _stats(_log_weights(SYSTEMS[name](jax.random.key(7), sub_xs, sub_ys, n)))
        z_sub = (sub["log_z"] - exact) / sub["se_log_z"]
        passed = max(abs(z_mean), abs(z_rate), abs(z_sub)) < k
        ok &= passed
        rows.append(
            f"| {name} | {s['mean']:.1f} ± {s['se_mean']:.1f} | {z_mean:+.2f} | {rate:.4f} ({z_rate:+.2f}) "
            f"| {s['log_z']:.2f} (ESS {s['ess']:.1f}) | {sub['log_z']:.3f} ± {sub['se_log_z']:.3f} (ESS {sub['ess']:.0f}) "
            f"| {z_sub:+.2f} | {'pass' if passed else 'FAIL'} |"
        )
    header = [
        f"Sanity check at N = {n:,} (|z| < {k:g} required). Full data: mean log weight (z vs hand-written), "
        f"outlier rate of the prior draws (z vs {systems.OUTLIER_PROB}), log Z estimate and its ESS (information only: "
        f"prior proposals on 50 points give ESS ~ 1). Subset of {subset_points} points: log Z estimate ± delta-method "
        f"SE vs the exact {exact:.3f} (by enumeration).",
        "",
        "| system | mean log w (full) | z | outlier rate (z) | log Z (full) | log Z (subset) | z vs exact | check |",
        "|---|---|---|---|---|---|---|---|",
    ]
    return header + rows, ok


def run(sizes, repeats_for, sanity_size, diagnose_sizes, log=print):
    """Returns markdown lines, whether the sanity check passed, and
    ``{(N, system): median seconds}``."""
    xs, ys = systems.make_data()
    diagnostics = {name: fn for name, (fn, _) in systems.DIAGNOSTICS.items()}
    for fn in list(SYSTEMS.values()) + list(diagnostics.values()):  # warm JAX's own caches
        jax.block_until_ready(fn(jax.random.key(0), xs, ys, 16))
    main_rows, diag_rows, sanity, ok, medians, costs = [], [], [], True, {}, {}
    for n in sizes:
        calls = dict(SYSTEMS)
        if n in diagnose_sizes:
            calls.update(diagnostics)
        repeats = repeats_for(n)
        log(f"[importance] N={n:,}: {len(calls)} systems, {repeats} interleaved repeats")
        compile_seconds = {name: _compile_seconds(name, n, xs, ys) for name in SYSTEMS}
        times, last = _time_size(calls, xs, ys, n, repeats)
        base, _ = summary(times[BASELINE])
        for name in calls:
            median, iqr = summary(times[name])
            medians[n, name] = median
            if name in SYSTEMS:
                lower, compile_ = compile_seconds[name]
                main_rows.append(
                    f"| {n:,} | {name} | {median * 1e3:.2f} | {iqr * 1e3:.2f} | {median / base:.2f} "
                    f"| {lower:.2f} | {compile_:.2f} |"
                )
            if n in diagnose_sizes:
                if name not in costs:
                    costs[name] = _cost_per_particle(name, calls[name], xs, ys, _COST_SIZE)
                flops, bytes_ = costs[name]
                diag_rows.append(f"| {n:,} | {name} | {median * 1e3:.1f} | {median / base:.2f} | {flops:,.0f} | {bytes_:,.0f} |")
            log(f"  {name:48s} {median * 1e3:10.2f} ms  x{median / base:5.2f}")
        if n in diagnose_sizes:
            mimic = last["hand + ppl's keys"]
            diag_rows.append(f"| {n:,} | ({_same_draws(last['ppl'], mimic)}) | | | | |")
        if n == sanity_size:
            log(f"[importance] sanity check at N={n:,}")
            sanity, ok = sanity_check({name: last[name] for name in SYSTEMS}, xs, ys, n)
    lines = [
        "| N | system | median ms | IQR ms | × hand-written | trace+lower s | XLA compile s |",
        "|---|---|---|---|---|---|---|",
        *main_rows,
        "",
        *sanity,
    ]
    if diag_rows:
        lines += [
            "",
            "Where ppl's time goes (same interleaved runs as the table above). Cost: XLA's cost analysis of the "
            f"compiled program at N = {_COST_SIZE:,} (one chunk), per particle.",
            "",
            *[f"- *{name}*: {what}" for name, (_, what) in systems.DIAGNOSTICS.items()],
            "",
            "| N | system | median ms | × hand-written | flops/particle | bytes accessed/particle |",
            "|---|---|---|---|---|---|",
            *diag_rows,
        ]
    return lines, ok, medians
