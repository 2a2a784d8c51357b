"""(H) Adaptive likelihood-tempered SMC with HMC moves on a conjugate
Bayesian linear regression: ``smc.tempered`` against BlackJAX's
``adaptive_tempered_smc`` with the same particles and moves, in one process
with interleaved repeats; log Z of both against the exact value."""

import jax
import numpy as np

from benchmarks import tempered_systems as systems
from benchmarks.timing import interleaved, summary, timed

__all__ = ["run", "PPL", "BASELINE"]

PPL, BASELINE = "ppl smc.tempered", "BlackJAX adaptive_tempered_smc"


def _size(n, repeats, xs, ys, log):
    calls = {PPL: systems.ppl_tempered(n), BASELINE: systems.blackjax_tempered(n)}
    first = {name: timed(call, jax.random.key(0), xs, ys)[0] for name, call in calls.items()}
    outputs = {name: [] for name in calls}

    def keep(name):
        def one(r):
            out = jax.block_until_ready(calls[name](jax.random.key(100 + r), xs, ys))
            outputs[name].append((float(out[0]), int(out[1])))
            return out

        return one

    times, _ = interleaved({name: keep(name) for name in calls}, repeats)
    return first, times, outputs


def run(sizes=(1_000, 4_000, 16_000), repeats=10, log=print):
    """(markdown lines, {N: (ppl ÷ BlackJAX total, per tempering step)})."""
    xs, ys = systems.data()
    exact = systems.exact_log_z(xs, ys)
    rows, ratios = [], {}
    for n in sizes:
        log(f"[tempered] N={n:,}: first calls, then {repeats} interleaved repeats")
        first, times, outputs = _size(n, repeats, xs, ys, log)
        figures = {}
        for name in (PPL, BASELINE):
            median, iqr = summary(times[name])
            log_z = np.array([o[0] for o in outputs[name]])
            steps = float(np.median([o[1] for o in outputs[name]]))
            figures[name] = (median, iqr, steps, log_z)
        base, _, base_steps, _ = figures[BASELINE]
        for name, (median, iqr, steps, log_z) in figures.items():
            rmse = float(np.sqrt(np.mean((log_z - exact) ** 2)))
            rows.append(f"| {n:,} | {name} | {first[name]:.2f} | {median:.3f} | {iqr:.3f} | {median / base:.2f} | {steps:.0f} "
                        f"| {median / steps * 1e3:.1f} | {(median / steps) / (base / base_steps):.2f} "
                        f"| {log_z.mean() - exact:+.3f} | {log_z.std(ddof=1):.3f} | {rmse:.3f} |")
            log(f"  N={n:>7,}: {name:32s} {median:7.3f} s  x{median / base:5.2f}  steps {steps:.0f}  log Z RMSE {rmse:.3f}")
        ppl_median, _, ppl_steps, _ = figures[PPL]
        ratios[n] = (ppl_median / base, (ppl_median / ppl_steps) / (base / base_steps))
    lines = [
        "## (H) SMC: adaptive tempered SMC vs BlackJAX",
        "",
        f"Bayesian linear regression, {systems.DIM} weights, {systems.ROWS} rows (conjugate: exact log Z = {exact:.3f}). "
        f"Both: N particles from the prior, the next temperature by bisection to ESS = {systems.TARGET_ESS} N, "
        f"systematic resampling, {systems.MOVES} HMC moves per particle per step ({systems.LEAPFROG} leapfrog steps, "
        f"step size {systems.STEP_SIZE}, identity metric, no tuning: `smc.tempered(..., adapt=False)`), one jitted "
        "call with the steps in a `lax.while_loop`. BlackJAX picks each temperature from the particles before they are "
        "resampled and moved (ignoring their weights) and moves them under the previous temperature; ppl picks it "
        "from the moved, equally weighted particles and moves under the new one, so the two take different numbers "
        "of steps: compare time per step as well as in total. Seconds from the second call (median, IQR of "
        f"{repeats} interleaved repeats); log Z: bias, standard deviation and RMSE against the exact value over the repeats.",
        "",
        "| N | system | first call s | median s | IQR s | ÷ BlackJAX | steps | ms per step | per step ÷ BlackJAX "
        "| log Z bias | log Z sd | log Z RMSE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    return lines, ratios
