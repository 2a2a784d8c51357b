"""(G) The bootstrap particle filter (1-D linear-Gaussian model, T = 100,
systematic resampling at every step) through ``smc.particle_filter`` against
the same filter hand-written in JAX (same outputs), at N = 1e3 ... 1e6, in
one process with interleaved repeats; XLA's peak memory per call; log Z of
both against the Kalman filter's exact value."""

import jax
import numpy as np
from scipy.stats import norm

from benchmarks import smc_systems as systems
from benchmarks.timing import interleaved, summary, timed

__all__ = ["run", "PPL", "BASELINE", "LEAN"]

PPL, BASELINE, LEAN = "ppl smc.particle_filter", "hand-written JAX (same outputs)", "hand-written JAX (log Z only)"


def _kalman_log_z(y0, ys):
    a, q, r, s0 = systems.A, systems.Q, systems.R, systems.S0
    m, p = 0.0, s0**2
    log_z = 0.0
    for i, y in enumerate([float(y0)] + [float(v) for v in np.asarray(ys)]):
        if i:
            m, p = a * m, a * a * p + q * q
        log_z += norm.logpdf(y, m, np.sqrt(p + r * r))
        k = p / (p + r * r)
        m, p = m + k * (y - m), (1 - k) * p
    return log_z


def _peak_bytes(fn, *args):
    """XLA's bytes for one call: arguments + outputs + temporaries (its peak, bar aliasing)."""
    analysis = fn.lower(*args).compile().memory_analysis()
    if analysis is None:
        return float("nan")
    return analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes


def _log_z(output):
    return float(output.log_marginal_likelihood if hasattr(output, "log_marginal_likelihood") else output[0] if isinstance(output, tuple) else output)


def _size(n, repeats, y0, ys, log):
    calls = {PPL: systems.ppl_filter(n), BASELINE: systems.hand_filter(n), LEAN: systems.hand_log_z_only(n)}
    first = {name: timed(call, jax.random.key(0), y0, ys)[0] for name, call in calls.items()}
    peaks = {name: _peak_bytes(call, jax.random.key(0), y0, ys) for name, call in calls.items()}
    log_zs = {name: [] for name in calls}

    def keep(name):
        def one(r):
            out = calls[name](jax.random.key(100 + r), y0, ys)
            log_zs[name].append(_log_z(jax.block_until_ready(out)))
            return out

        return one

    times, _ = interleaved({name: keep(name) for name in calls}, repeats)
    medians = {name: summary(times[name]) for name in calls}
    # each repeat's time over the hand-written (same outputs) time of the same repeat: drift cancels
    paired = {name: float(np.median(np.asarray(times[name]) / np.asarray(times[BASELINE]))) for name in calls}
    for name in calls:
        log(f"  N={n:>9,}: {name:34s} {medians[name][0]:8.4f} s  x{medians[name][0] / medians[BASELINE][0]:5.2f}  paired x{paired[name]:6.3f}")
    return first, peaks, medians, paired, log_zs


def run(sizes=(1_000, 10_000, 100_000, 1_000_000), repeats=None, log=print):
    """(markdown lines, {N: ppl ÷ hand-written (same outputs)})."""
    y0, ys = systems.data()
    exact = _kalman_log_z(y0, ys)
    rows, ratios, checks = [], {}, []
    for n in sizes:
        count = repeats or max(5, min(200, int(2e8 // (n * systems.STEPS))))  # about 20 s of calls per size
        log(f"[smc] N={n:,}: first calls, then {count} interleaved repeats")
        first, peaks, medians, paired, log_zs = _size(n, count, y0, ys, log)
        base = medians[BASELINE][0]
        ratios[n] = medians[PPL][0] / base
        for name in (PPL, BASELINE, LEAN):
            median, iqr = medians[name]
            rows.append(f"| {n:,} | {name} | {count} | {first[name]:.2f} | {median:.4f} | {iqr:.4f} | {median / base:.2f} "
                        f"| {paired[name]:.3f} | {median / medians[LEAN][0]:.2f} | {peaks[name] / 2**20:,.0f} |")
        values = np.array(log_zs[PPL] + log_zs[BASELINE])
        checks.append(f"| {n:,} | {np.mean(log_zs[PPL]):.3f} | {np.mean(log_zs[BASELINE]):.3f} | {exact:.3f} "
                      f"| {np.std(values, ddof=1):.3f} |")
    lines = [
        "## (G) SMC: the bootstrap particle filter",
        "",
        f"1-D linear-Gaussian state-space model, T = {systems.STEPS} steps after a prefix (x0, y0), systematic "
        "resampling at every step (`ess_threshold=1.0`), one jitted call per run; *hand-written JAX (same outputs)* "
        "returns what `smc.particle_filter` does (log Z, each step's particles, weights, ancestors and ESS, the final "
        "trajectories with their log densities); *log Z only* keeps no history. Seconds from the second call, median "
        "and IQR of interleaved repeats; *paired*: the median over repeats of each call's time over the hand-written "
        "(same outputs) call's in the same repeat (the machine's drift cancels); peak memory: XLA's arguments + "
        "outputs + temporaries of the compiled call.",
        "",
        "| N | system | repeats | first call s | median s | IQR s | ÷ hand-written (same outputs) | paired ÷ hand-written | ÷ log Z only | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Sanity check: mean log Z over the timed repeats against the Kalman filter's exact log Z (the estimate is "
        "unbiased in Z, so its log is biased low by about var/2 at small N).",
        "",
        "| N | ppl mean log Z | hand-written mean log Z | exact | std of log Z |",
        "|---|---|---|---|---|",
        *checks,
        "",
    ]
    return lines, ratios
