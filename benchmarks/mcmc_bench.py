"""(E) MCMC: fixed-step HMC against hand-written JAX and BlackJAX; NUTS (500
warmup + 1000 draws) against BlackJAX and NumPyro on eight schools and a
logistic regression; vmap vs sequential chains; checks that every system
samples the same posterior (systems in ``mcmc_systems.py``)."""

import contextlib
import io
import warnings

import jax
import numpy as np

from benchmarks import mcmc_systems as systems
from benchmarks.timing import interleaved, summary, timed
from ppl.transforms import unconstrain

__all__ = ["run", "HMC_BASELINE", "NUTS_BASELINE", "PPL_HMC", "PPL_KERNEL", "PPL_NUTS"]

HMC_BASELINE, PPL_HMC, PPL_KERNEL = "hand-written JAX", "ppl mcmc.hmc", "ppl hmc_kernel + scan"
NUTS_BASELINE, PPL_NUTS, NUMPYRO = "BlackJAX", "ppl mcmc.nuts", "NumPyro"
PPL_PROGRESS, PPL_SEQUENTIAL = "ppl mcmc.nuts, progress=True", "ppl mcmc.nuts, chain_method='sequential'"
PPL_NUTS_KERNEL = "ppl nuts_kernel + scan"
HMC_CHAINS = (1, 8)
HMC_BURN_IN = 100  # transitions dropped from each HMC chain in the check
K = 5.0  # |z| bound of every check


# ----- statistics ------------------------------------------------------------------------


def _arviz():
    import arviz

    warnings.filterwarnings("ignore", module="arviz")
    return arviz


def _scalars(samples):
    """``{"name[i]": (chains, draws)}`` for every scalar of the draws."""
    out = {}
    for name, value in samples.items():
        value = np.asarray(value, np.float64)
        flat = value.reshape(value.shape[:2] + (-1,))
        for i in range(flat.shape[-1]):
            out[name if value.ndim == 2 else f"{name}[{i}]"] = flat[..., i]
    return out


def _mean_and_mcse(draws):
    """Mean and Monte Carlo standard error (from the ESS) of (chains, draws)."""
    return float(draws.mean()), float(_arviz().mcse(draws, method="mean"))


def _min_bulk_ess(samples):
    """(name, bulk ESS) of the slowest-mixing scalar."""
    ess = {name: float(_arviz().ess(draws, method="bulk")) for name, draws in _scalars(samples).items()}
    name = min(ess, key=ess.get)
    return name, ess[name]


# ----- (E1) fixed-step HMC ---------------------------------------------------------------


def _silenced(call):
    """``call`` with the progress bar's output (stderr) captured, so the report stays readable."""

    def quiet(*args):
        with contextlib.redirect_stderr(io.StringIO()):
            return call(*args)

    return quiet


def _hmc_check(outputs, exact_mean):
    """Rows: each system's posterior mean of coeffs (burn-in dropped) against the closed form."""
    rows, ok = [], True
    for (num_chains, name), output in outputs.items():
        coeffs = np.asarray(output["coeffs"], np.float64)[:, HMC_BURN_IN:]
        cells, passed = [], True
        for i in range(3):
            mean, mcse = _mean_and_mcse(coeffs[..., i])
            z = (mean - exact_mean[i]) / mcse
            passed &= abs(z) < K
            cells.append(f"{mean:.4f} ± {mcse:.4f} ({z:+.1f})")
        ok &= passed
        accept = float(np.mean(output["accepted"]))
        rows.append(f"| {num_chains} | {name} | {' | '.join(cells)} | {accept:.3f} | {'pass' if passed else 'FAIL'} |")
    return rows, ok


def _hmc_timings(num_chains, data, repeats, log):
    """First calls, then interleaved repeats of every HMC system with ``num_chains`` chains:
    (rows, {system: ratio to hand-written}, {system: last output})."""
    calls = {name: _silenced(c) if "progress" in name else c for name, c in systems.hmc_systems(num_chains, data).items()}
    first = {name: timed(call, jax.random.key(0))[0] for name, call in calls.items()}
    log(f"[mcmc] HMC, {num_chains} chain(s): {repeats} interleaved repeats")
    keys = [jax.random.key(1000 + r) for r in range(repeats)]
    times, last = interleaved({name: (lambda r, c=call: c(keys[r])) for name, call in calls.items()}, repeats)
    base, _ = summary(times[HMC_BASELINE])
    scale = 1000 / systems.HMC_TRANSITIONS * 1e3  # ms per 1000 transitions (of every chain)
    rows, ratios = [], {}
    for name in calls:
        median, iqr = summary(times[name])
        ratios[name] = median / base
        # each repeat's time over the hand-written time of the same repeat: drift cancels
        paired = float(np.median(np.asarray(times[name]) / np.asarray(times[HMC_BASELINE])))
        rows.append(
            f"| {num_chains} | {name} | {median * scale:.2f} | {iqr * scale:.2f} | {median / base:.2f} | {paired:.3f} | {first[name]:.2f} |"
        )
        log(f"  {name:30s} {median * scale:8.2f} ms  x{median / base:5.2f}  paired x{paired:6.3f}")
    return rows, ratios, last


def _largest_difference(outputs, name):
    """Largest |difference| between ``name``'s draws and hand-written JAX's (same keys)."""
    return max(
        float(np.max(np.abs(np.asarray(outputs[c, name]["coeffs"]) - np.asarray(outputs[c, HMC_BASELINE]["coeffs"]))))
        for c in HMC_CHAINS
    )


def _hmc_section(repeats, log):
    data = systems.make_poly_data()
    exact_mean, exact_cov = systems.poly_exact_posterior(*data)
    rows, outputs, ratios = [], {}, {}
    for num_chains in HMC_CHAINS:
        chain_rows, chain_ratios, last = _hmc_timings(num_chains, data, repeats, log)
        rows += chain_rows
        ratios.update({(num_chains, name): r for name, r in chain_ratios.items()})
        outputs.update({(num_chains, name): out for name, out in last.items()})
    check, ok = _hmc_check(outputs, exact_mean)
    sd = np.sqrt(np.diag(exact_cov))
    same = "; ".join(f"*{name}* {_largest_difference(outputs, name):.1e}" for name in (PPL_KERNEL, "BlackJAX"))
    lines = [
        "| chains | system | ms per 1000 transitions (median) | IQR ms | × hand-written | paired × hand-written (median) | first call s |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Sanity check (|z| < {K:g} required): posterior mean of each coefficient ({HMC_BURN_IN} burn-in transitions "
        "dropped per chain) against the closed-form Gaussian posterior, mean "
        f"({', '.join(f'{m:.4f}' for m in exact_mean)}), sd ({', '.join(f'{s:.4f}' for s in sd)}); "
        "± the MCSE from ArviZ's ESS; the last timed run of each system.",
        "",
        "| chains | system | c0 (z) | c1 (z) | c2 (z) | acceptance | check |",
        "|---|---|---|---|---|---|---|",
        *check,
        "",
        "Same random numbers, same chains (informational: these systems split their keys alike, so they draw the "
        "same momenta and uniforms; float rounding of the log density may differ): largest |difference| from "
        f"hand-written JAX's draws over the last runs: {same}.",
    ]
    return lines, ok, ratios


# ----- (E2) NUTS -------------------------------------------------------------------------


def _nuts_systems(problem):
    """``{name: (fn(key), draws)}`` and ppl's model: fresh models and functions, so first calls compile."""
    model = problem.make_model()
    ppl_call, ppl_draws = systems.ppl_nuts(problem, model)
    progress_call, _ = systems.ppl_nuts(problem, problem.make_model(), progress=True)
    sequential_call, _ = systems.ppl_nuts(problem, problem.make_model(), chain_method="sequential")
    calls = {
        PPL_NUTS: (ppl_call, ppl_draws),
        PPL_PROGRESS: (_silenced(progress_call), ppl_draws),
        PPL_SEQUENTIAL: (sequential_call, ppl_draws),
        NUTS_BASELINE: systems.blackjax_nuts(problem),
        NUMPYRO: systems.numpyro_nuts(problem),
    }
    return calls, model


def _run_repeats(calls, repeats, log, label):
    """First calls (timed one after the other), then ``repeats`` interleaved calls
    with new keys: (first seconds, {name: [seconds]}, {name: [raw outputs]})."""
    first = {}
    for name, call in calls.items():
        first[name], _ = timed(call, jax.random.key(0))
        log(f"  {label}: {name:32s} first call {first[name]:6.2f} s")
    keys = [jax.random.key(1000 + r) for r in range(repeats)]
    outputs = {name: [] for name in calls}

    def keep(name):
        def one(r):
            out = calls[name](keys[r])
            outputs[name].append(out)
            return out

        return one

    times, _ = interleaved({name: keep(name) for name in calls}, repeats)
    return first, times, outputs


def _draw_figures(draws_list):
    """Medians over repeats: the slowest scalar's bulk ESS, sampling and warmup
    leapfrog steps, divergences; and the last repeat's draws."""
    ess = [_min_bulk_ess(d.samples) for d in draws_list]
    warmup = [d.warmup_steps for d in draws_list]
    return dict(
        ess=float(np.median([e for _, e in ess])), slowest=ess[-1][0],
        n_steps=float(np.median([d.n_steps.sum() for d in draws_list])),
        vmap_steps=float(np.median([d.n_steps.max(axis=0).sum() for d in draws_list])),
        warmup_steps=None if warmup[0] is None else float(np.median(warmup)),
        divergences=float(np.median([d.diverging.sum() for d in draws_list])),
        step_size=float(np.median([np.median(d.step_size) for d in draws_list])),
        last=draws_list[-1],
    )


def _sampling_only(problem, model, ppl_result, repeats):
    """The sampling phase alone: 1000 transitions from ppl's final position with ppl's
    adapted step size and metric held fixed, by ppl's call (``mcmc.nuts(num_warmup=0,
    state=result.state)``), ppl's kernel in a plain jitted scan, and BlackJAX's loop:
    {name: (median seconds, median leapfrog steps)}."""
    state = ppl_result.state
    parameters = (state.kernel_state.position[0], state.step_size[0], state.inverse_mass_matrix[0])
    ppl_call, _ = systems.ppl_nuts(problem, model, num_warmup=0, state=state)
    kernel = systems.ppl_nuts_kernel_sampling(unconstrain(model, problem.args, problem.observations))
    blackjax = systems.blackjax_nuts_sampling(problem)
    calls = {
        PPL_NUTS: lambda key: ppl_call(key).stats["n_steps"],
        PPL_NUTS_KERNEL: lambda key: kernel(key, *parameters),
        NUTS_BASELINE: lambda key: blackjax(key, *parameters),
    }
    for call in calls.values():
        timed(call, jax.random.key(0))
    keys = [jax.random.key(2000 + r) for r in range(repeats)]
    counts = {name: [] for name in calls}

    def counted(name):
        def one(r):
            out = jax.block_until_ready(calls[name](keys[r]))
            counts[name].append(float(np.sum(out)))
            return out

        return one

    times, _ = interleaved({name: counted(name) for name in calls}, repeats)
    return {name: (summary(times[name])[0], float(np.median(counts[name]))) for name in calls}


def _gradient_cost(problem, model):
    """µs per ``value_and_grad`` of the log density, ppl's target vs the hand-written one."""
    target = unconstrain(model, problem.args, problem.observations)
    start = target.initial_position(jax.random.key(5)) * 0.1
    hand = systems.gradient_chain(problem.log_density)
    ours = systems.gradient_chain(lambda q, target: target.log_density(q))
    calls = {"ppl": lambda r: ours(start, target), "hand": lambda r: hand(start, *problem.log_density_args)}
    for call in calls.values():
        timed(call, 0)
    times, _ = interleaved(calls, 7)
    return {name: summary(seconds)[0] / 1000 * 1e6 for name, seconds in times.items()}


def _nuts_row(label, name, first, seconds, figures):
    median, iqr = summary(seconds)
    f = figures
    known = f["warmup_steps"] is not None
    per_step = f"{median / (f['n_steps'] + f['warmup_steps']) * 1e6:.1f}" if known else "-"
    warm = f"{f['warmup_steps']:,.0f}" if known else "-"
    return (
        f"| {label} | {name} | {first:.2f} | {median:.2f} | {iqr:.2f} | {f['ratio']:.2f} "
        f"| {f['ess']:.0f} ({f['slowest']}) | {f['ess'] / median:.0f} | {f['n_steps']:,.0f} | {warm} "
        f"| {per_step} | {f['step_size']:.3g} | {f['divergences']:.0f} |"
    )


def _diagnostic_row(label, problem, model, ppl_result, repeats):
    """Where the time goes on one model: the sampling phase alone and one gradient."""
    sampling = _sampling_only(problem, model, ppl_result, repeats)
    gradient = _gradient_cost(problem, model)
    per_step = {name: seconds / steps for name, (seconds, steps) in sampling.items()}
    cells = " | ".join(f"{sampling[n][0]:.3f} s, {sampling[n][1]:,.0f} steps, {per_step[n] * 1e6:.2f} µs/step" for n in sampling)
    ratios = " | ".join(f"{per_step[n] / per_step[NUTS_BASELINE]:.2f}" for n in (PPL_NUTS, PPL_NUTS_KERNEL))
    return f"| {label} | {cells} | {ratios} | {gradient['ppl']:.2f} | {gradient['hand']:.2f} |", per_step


def _nuts_problem(label, repeats, log):
    """(rows, diagnostic row, {system: figures}, {system: last draws}) of one model."""
    problem = systems.PROBLEMS[label]()
    calls, model = _nuts_systems(problem)
    log(f"[mcmc] NUTS on {label}: first calls, then {repeats} interleaved repeats")
    first, times, outputs = _run_repeats({name: c for name, (c, _) in calls.items()}, repeats, log, label)
    base, _ = summary(times[NUTS_BASELINE])
    rows, figures, draws = [], {}, {}
    for name, (_, to_draws) in calls.items():
        median, _ = summary(times[name])
        f = _draw_figures([to_draws(out) for out in outputs[name]])
        figures[name] = dict(f, seconds=median, ratio=median / base, first=first[name])
        draws[label, name] = f["last"]
        rows.append(_nuts_row(label, name, first[name], times[name], figures[name]))
        log(f"  {label}: {name:32s} {median:6.2f} s  x{median / base:5.2f}  ESS/s {f['ess'] / median:7.0f}")
    diagnostic, per_step = _diagnostic_row(label, problem, model, outputs[PPL_NUTS][-1], repeats + 1)
    figures["sampling only"] = per_step
    return rows, diagnostic, figures, draws


def _nuts_section(repeats, log):
    rows, diagnostics, figures, draws = [], [], {}, {}
    for label in systems.PROBLEMS:
        problem_rows, diagnostic, problem_figures, problem_draws = _nuts_problem(label, repeats, log)
        rows += problem_rows
        diagnostics.append(diagnostic)
        figures.update({(label, name): f for name, f in problem_figures.items()})
        draws.update(problem_draws)
    lines = [
        "| model | system | first call s | second call s (median) | IQR s | × BlackJAX | min bulk ESS (slowest) "
        "| ESS/s | leapfrog steps, sampling | leapfrog steps, warmup | µs per leapfrog step | step size | divergences |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Where the time goes: the sampling phase alone, 1000 transitions from ppl's last position with ppl's "
        "adapted step size and metric held fixed (the same work for all three, up to the random trajectory "
        "lengths), per leapfrog step (one gradient evaluation each): *ppl mcmc.nuts*: "
        "`mcmc.nuts(..., num_warmup=0, state=result.state)` as a user calls it; *ppl nuts_kernel + scan*: "
        "`mcmc.nuts_kernel(target.log_density, ...)` in a plain jitted scan (no driver, no vmap over chains); "
        "*BlackJAX*: its `blackjax.nuts` loop on the hand-written log density in one jit. Last two columns: one "
        "`value_and_grad` of the log density alone (1000 chained evaluations in a jitted scan), ppl's "
        "`unconstrain(...).log_density` and the hand-written one.",
        "",
        f"| model | {PPL_NUTS} | {PPL_NUTS_KERNEL} | BlackJAX | {PPL_NUTS} ÷ BlackJAX per step "
        f"| {PPL_NUTS_KERNEL} ÷ BlackJAX per step | ppl log density µs/grad | hand-written µs/grad |",
        "|---|---|---|---|---|---|---|---|",
        *diagnostics,
    ]
    return lines, figures, draws


# ----- (E3) vmap vs sequential chains ------------------------------------------------------


def _chains_section(repeats, log):
    rows, figures, draws = [], {}, {}
    for label, make_problem in systems.PROBLEMS.items():
        problem = make_problem()
        model = problem.make_model()
        calls = {
            method: systems.ppl_nuts(problem, model, num_chains=4, chain_method=method) for method in ("vmap", "sequential")
        }
        log(f"[mcmc] 4 chains on {label}: vmap vs sequential, {repeats} interleaved repeats")
        first, times, outputs = _run_repeats({m: c for m, (c, _) in calls.items()}, repeats, log, label)
        for method, (_, to_draws) in calls.items():
            median, iqr = summary(times[method])
            f = _draw_figures([to_draws(out) for out in outputs[method]])
            figures[label, method] = dict(f, seconds=median, first=first[method])
            draws[label, f"ppl 4 chains, {method}"] = f["last"]
            rows.append(
                f"| {label} | {method} | {first[method]:.2f} | {median:.2f} | {iqr:.2f} | {f['ess']:.0f} ({f['slowest']}) "
                f"| {f['ess'] / median:.0f} | {f['n_steps']:,.0f} | {f['vmap_steps']:,.0f} | {f['divergences']:.0f} |"
            )
        v, s = figures[label, "vmap"]["seconds"], figures[label, "sequential"]["seconds"]
        log(f"  {label}: vmap {v:.2f} s, sequential {s:.2f} s")
    lines = [
        "| model | chain_method | first call s | seconds per call (median) | IQR s | min bulk ESS (slowest) | ESS/s "
        "| leapfrog steps, sampling, all chains | Σ over draws of the longest chain's steps | divergences |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "With `vmap` every transition of the 4 chains runs as one batched trajectory that lasts as long as the "
        "longest chain's (the second-last column is what vmap pays, against the sum over chains that "
        "sequential pays, the column before).",
    ]
    return lines, figures, draws


# ----- (E4) agreement ----------------------------------------------------------------------


def _nuts_check(draws, reference=NUTS_BASELINE):
    """Every system's posterior means of a few parameters against BlackJAX's:
    z = difference / sqrt(MCSE^2 + MCSE_ref^2)."""
    rows, ok = [], True
    labels = list(dict.fromkeys(label for label, _ in draws))
    for label in labels:
        problem = systems.PROBLEMS[label]()
        ref = _scalars(draws[label, reference].samples)
        ref_stats = {p: _mean_and_mcse(ref[p]) for p in problem.checked}
        for (other_label, name), d in draws.items():
            if other_label != label:
                continue
            scalars, cells, passed = _scalars(d.samples), [], True
            for p in problem.checked:
                mean, mcse = _mean_and_mcse(scalars[p])
                ref_mean, ref_mcse = ref_stats[p]
                z = 0.0 if name == reference else (mean - ref_mean) / np.hypot(mcse, ref_mcse)
                passed &= abs(z) < K
                cells.append(f"{p} {mean:.3f} ± {mcse:.3f} ({z:+.1f})")
            ok &= passed
            rows.append(f"| {label} | {name} | {'; '.join(cells)} | {'pass' if passed else 'FAIL'} |")
    lines = [
        f"Sanity check (|z| < {K:g} required): posterior means (± MCSE from ArviZ's ESS) of every system's last run "
        f"against BlackJAX's; z = difference / sqrt(MCSE² + MCSE_BlackJAX²).",
        "",
        "| model | system | means (z) | check |",
        "|---|---|---|---|",
        *rows,
    ]
    return lines, ok


def run(repeats=5, log=print):
    """Markdown lines, whether every check passed, and the figures the targets read:
    ``{"hmc": {(chains, system): ratio}, "nuts": {(model, system): {...}}, "chains": {...}}``."""
    hmc_lines, hmc_ok, hmc_ratios = _hmc_section(40 * repeats, log)  # ~10 ms calls: many repeats are cheap
    nuts_lines, nuts_figures, nuts_draws = _nuts_section(repeats, log)
    chain_lines, chain_figures, chain_draws = _chains_section(max(1, repeats - 2), log)
    check_lines, nuts_ok = _nuts_check({**nuts_draws, **chain_draws})
    lines = [
        "### (E1) Fixed-step HMC on the polynomial regression",
        "",
        f"Step size {systems.HMC_STEP_SIZE}, {systems.HMC_LEAPFROG_STEPS} leapfrog steps, identity metric, "
        f"{systems.HMC_TRANSITIONS} transitions per chain; every system draws its start uniformly on (-2, 2). "
        "*ppl mcmc.hmc*: the call as a user writes it (outside any jit), timed end to end from the second call "
        "(new key each call) until its result is ready; *ppl hmc_kernel + scan*: `mcmc.hmc_kernel(target.log_density, "
        "...)` in one jitted `lax.scan` (vmap over chains); *hand-written JAX*: log density, leapfrog and "
        "accept/reject written out, one jitted scan, vmap over chains; *BlackJAX*: `blackjax.hmc` on the hand-written "
        f"log density in one jit. Median of {40 * repeats} interleaved repeats; *paired*: the median over repeats "
        "of each call's time over the hand-written call's in the same repeat (the machine's drift cancels); first "
        "call: a fresh function's first call (compile included). The progress bar's output is captured, not shown.",
        "",
        *hmc_lines,
        "",
        f"### (E2) NUTS, {systems.NUM_WARMUP} warmup + {systems.NUM_SAMPLES} draws, one chain",
        "",
        "*ppl mcmc.nuts*: `mcmc.nuts(key, model, args, observations, num_warmup=500, num_samples=1000, num_chains=1, "
        "progress=False)` as a user calls it (and with the default `progress=True`); *BlackJAX*: "
        "`blackjax.window_adaptation(blackjax.nuts, log_density)` + a `blackjax.nuts` sampling loop in one `jax.jit` "
        "(the hand-written log density on the same unconstrained space); *NumPyro*: "
        "`MCMC(NUTS(model), num_warmup=500, num_samples=1000, progress_bar=False).run(key, ...)`, a new MCMC object per "
        "call (each call compiles). First call: a fresh model / function (compile included); second call: median of "
        "interleaved repeats with new keys. ESS: ArviZ's bulk ESS of the slowest-mixing scalar parameter (median "
        "over repeats). Leapfrog steps: the sum of `n_steps` (gradient evaluations) over the kept draws, and over "
        "warmup where the system reports it; µs per leapfrog step: the call's time over all its steps; step size: "
        "the adapted one. *chain_method='sequential'*: the same one chain run without the vmap over chains "
        "(`lax.map`), which shows what vmapping a single chain costs in compile time.",
        "",
        *nuts_lines,
        "",
        "### (E3) Four chains: `chain_method=\"vmap\"` vs `\"sequential\"` (ppl `mcmc.nuts`, 500 + 1000 per chain)",
        "",
        *chain_lines,
        "",
        "### (E4) Every NUTS system samples the same posterior",
        "",
        *check_lines,
    ]
    figures = {"hmc": hmc_ratios, "nuts": nuts_figures, "chains": chain_figures}
    return lines, hmc_ok and nuts_ok, figures
