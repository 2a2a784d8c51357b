"""Run the benchmarks in one process and write a markdown report.

    .venv/bin/python -m benchmarks.run            # full run, writes benchmarks/RESULTS.md
    .venv/bin/python -m benchmarks.run --quick    # a smaller run, printed only
    .venv/bin/python -m benchmarks.run vae        # only the VAE benchmark, printed only
    .venv/bin/python -m benchmarks.run mh         # only the MH-step benchmark, printed only
    .venv/bin/python -m benchmarks.run mcmc       # only the MCMC benchmark (HMC, NUTS, chains), printed only
    .venv/bin/python -m benchmarks.run adaptation # only ESS per gradient of the NUTS metric adaptations
    .venv/bin/python -m benchmarks.run smc        # only the particle filter vs hand-written JAX
    .venv/bin/python -m benchmarks.run tempered   # only tempered SMC vs BlackJAX
    .venv/bin/python -m benchmarks.run rejection  # only gradient variance of RejectionReparam vs implicit vs REINFORCE
    .venv/bin/python -m benchmarks.run svgd       # only coin SVGD vs SVGD at three learning rates
    .venv/bin/python -m benchmarks.run flow       # only flows: ELBO step vs hand-written JAX, path gradients
"""

import argparse
import datetime
import os
import sys
import time

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/run.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import (  # noqa: E402
    adaptation_bench,
    compile_bench,
    flow_bench,
    importance_bench,
    importance_simple_bench,
    mcmc_bench,
    mh_bench,
    rejection_bench,
    smc_bench,
    svgd_bench,
    tempered_bench,
    vae_bench,
)
from benchmarks.timing import machine_description  # noqa: E402

__all__ = ["main"]

_HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = ("importance", "simple", "compile", "vae", "mh", "mcmc", "adaptation", "smc", "tempered", "rejection", "svgd", "flow")


def _ints(text):
    return [int(float(t)) for t in text.split(",") if t.strip()]


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "benchmarks", nargs="*", metavar="BENCHMARK",
        help=f"run only these, of {', '.join(BENCHMARKS)} (default all; a selection prints only, unless --output)",
    )
    parser.add_argument("--quick", action="store_true", help="N up to 1e5, n up to 50, fewer repeats; prints only")
    parser.add_argument("--sizes", type=_ints, help="particle counts N (default 1e3,1e4,1e5,1e6)")
    parser.add_argument("--compile-sizes", type=_ints, help="chain lengths n (default 10,25,50,100,200)")
    parser.add_argument("--diagnose-sizes", type=_ints, help="N at which to add the diagnostic variants (default 1e5,1e6)")
    parser.add_argument("--repeats-scale", type=float, help="multiplier on the number of repeats (default 1)")
    parser.add_argument("--sanity-size", type=int, default=100_000, help="N of the statistical check (default 1e5)")
    parser.add_argument("--skip-importance", action="store_true")
    parser.add_argument("--skip-simple", action="store_true")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--skip-vae", action="store_true")
    parser.add_argument("--skip-mh", action="store_true")
    parser.add_argument("--skip-mcmc", action="store_true")
    parser.add_argument("--skip-adaptation", action="store_true")
    parser.add_argument("--skip-smc", action="store_true")
    parser.add_argument("--skip-tempered", action="store_true")
    parser.add_argument("--skip-rejection", action="store_true")
    parser.add_argument("--skip-svgd", action="store_true")
    parser.add_argument("--skip-flow", action="store_true")
    parser.add_argument("--vae-repeats", type=int, help="interleaved repeats of 200 VAE steps (default 15, 5 with --quick)")
    parser.add_argument("--mh-repeats", type=int, help="interleaved repeats of the MH chains (default 15, 5 with --quick)")
    parser.add_argument(
        "--mcmc-repeats", type=int,
        help="interleaved repeats of each NUTS call (default 5, 2 with --quick; HMC: 3x, vmap vs sequential: 2 fewer)",
    )
    parser.add_argument("--output", help="markdown file to write (default benchmarks/RESULTS.md, none with --quick)")
    args = parser.parse_args(argv)
    quick = args.quick
    unknown = sorted(set(args.benchmarks) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    selected = set(args.benchmarks) or set(BENCHMARKS)
    args.skip_importance |= "importance" not in selected
    args.skip_simple |= "simple" not in selected
    args.skip_compile |= "compile" not in selected
    args.skip_vae |= "vae" not in selected
    args.skip_mh |= "mh" not in selected
    args.skip_mcmc |= "mcmc" not in selected
    args.skip_adaptation |= "adaptation" not in selected
    args.skip_smc |= "smc" not in selected
    args.skip_tempered |= "tempered" not in selected
    args.skip_rejection |= "rejection" not in selected
    args.skip_svgd |= "svgd" not in selected
    args.skip_flow |= "flow" not in selected
    args.vae_repeats = args.vae_repeats or (5 if quick else 15)
    args.mh_repeats = args.mh_repeats or (5 if quick else 15)
    args.mcmc_repeats = args.mcmc_repeats or (2 if quick else 5)
    args.sizes = args.sizes or ([1_000, 10_000, 100_000] if quick else [1_000, 10_000, 100_000, 1_000_000])
    args.compile_sizes = args.compile_sizes or ([10, 25, 50] if quick else [10, 25, 50, 100, 200])
    if args.diagnose_sizes is None:
        args.diagnose_sizes = [100_000] if quick else [100_000, 1_000_000]
    args.repeats_scale = args.repeats_scale or (0.3 if quick else 1.0)
    if args.output is None and not quick and not args.benchmarks:
        args.output = os.path.join(_HERE, "RESULTS.md")
    return args


def repeats_for(n, scale):
    """About 4e6 particles' worth of work per system, between 5 and 40 repeats."""
    return max(5, min(40, round(scale * 4e6 / n)))


def _git_revision():
    import subprocess

    try:
        run = lambda *cmd: subprocess.run(cmd, cwd=_HERE, capture_output=True, text=True, check=True).stdout.strip()
        diff = run("git", "diff", "HEAD", "--", "../ppl", "../transforms", "../inference")
        head = run("git", "rev-parse", "--short", "HEAD")
        if not diff:
            return head
        import hashlib

        return f"{head} + uncommitted library changes (diff sha1 {hashlib.sha1(diff.encode()).hexdigest()[:10]})"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _targets(medians, compile_results, sizes, compile_sizes):
    """The issue's targets, met or missed."""
    lines = ["## Targets", ""]
    big = [n for n in sizes if n >= 100_000]
    if medians and big:
        ratio = {n: medians[n, "ppl"] / medians[n, importance_bench.BASELINE] for n in big}
        versus = {n: medians[n, "ppl"] / medians[n, "NumPyro"] for n in big}
        shown = ", ".join(f"{ratio[n]:.2f}× at N={n:,}" for n in big)
        lines.append(f"- ppl within 1.05× of hand-written JAX at N ≥ 1e5: **{'met' if max(ratio.values()) <= 1.05 else 'missed'}** ({shown})")
        shown = ", ".join(f"{versus[n]:.2f}× NumPyro's time at N={n:,}" for n in big)
        lines.append(f"- ppl faster than NumPyro: **{'met' if max(versus.values()) < 1 else 'missed'}** ({shown})")
    if compile_results and len(compile_sizes) > 1:
        first = [compile_results["ppl", n][0] for n in compile_sizes]
        slope = float(np.polyfit(np.log(compile_sizes), np.log(first), 1)[0])
        ok = slope < 1.3 and max(first) < 10
        shown = ", ".join(f"{t:.2f} s at n={n}" for n, t in zip(compile_sizes, first))
        lines.append(
            f"- compile time about linear and within seconds: **{'met' if ok else 'missed'}** ({shown}; log-log slope "
            f"{slope:.2f}; GenJAX: 8 s, 55 s, 353 s at n = 10, 25, 50)"
        )
    return lines + [""]


def _simple_targets(medians):
    """The simplest formulation's targets: 1.05x at N >= 1e5, first call within 1.2x."""
    if not medians:
        return []
    base = importance_simple_bench.BASELINE
    big = sorted(n for n, name in medians if name == base and n != "first call" and n >= 100_000)
    ratios = {n: medians[n, "ppl"] / medians[n, base] for n in big}
    first = medians["first call", "ppl"] / medians["first call", base]
    shown = ", ".join(f"{r:.2f}× at N={n:,}" for n, r in ratios.items())
    lines = []
    if ratios:
        met = "met" if max(ratios.values()) <= 1.05 else "missed"
        lines.append(f"- simplest formulation: ppl within 1.05× of hand-written JAX at N ≥ 1e5: **{met}** ({shown})")
    met = "met" if first <= 1.2 else "missed"
    lines.append(f"- simplest formulation: first call (trace + compile + run) within 1.2× of hand-written JAX: **{met}** ({first:.2f}×)")
    return lines


def _vae_targets(medians, cpu_medians):
    """The VAE targets, on the per-step loop (wall time; CPU time alongside)."""
    if not medians:
        return []
    hand, ppl, numpyro = (medians[name] for name in vae_bench.MAIN)
    cpu = cpu_medians["ppl"] / cpu_medians[vae_bench.BASELINE]
    cpu_numpyro = cpu_medians["ppl"] / cpu_medians["NumPyro"]
    return [
        f"- VAE step: ppl within 1.05× of hand-written JAX: **{'met' if ppl / hand <= 1.05 else 'missed'}** "
        f"({ppl / hand:.2f}× wall, {cpu:.2f}× CPU time)",
        f"- VAE step: ppl faster than NumPyro: **{'met' if ppl < numpyro else 'missed'}** "
        f"({ppl / numpyro:.2f}× NumPyro's wall time, {cpu_numpyro:.2f}× its CPU time)",
    ]


def _mh_targets(medians):
    """The MH-step target: one step through the GFI within 1.1x of hand-written JAX."""
    if not medians:
        return []
    ratio = medians[mh_bench.PPL] / medians[mh_bench.BASELINE]
    return [f"- MH step through regenerate within 1.1× of hand-written JAX: **{'met' if ratio <= 1.1 else 'missed'}** ({ratio:.2f}×)"]


def _mcmc_targets(figures):
    """The MCMC targets: fixed-step HMC within 1.05x of hand-written JAX; NUTS
    within 1.05x of BlackJAX from the second call, and faster than NumPyro."""
    if not figures:
        return []
    hmc = figures["hmc"]
    lines = []
    for name in (mcmc_bench.PPL_HMC, mcmc_bench.PPL_KERNEL):
        ratios = {c: hmc[c, name] for c in mcmc_bench.HMC_CHAINS}
        shown = ", ".join(f"{r:.2f}× with {c} chain{'s' if c > 1 else ''}" for c, r in ratios.items())
        met = "met" if max(ratios.values()) <= 1.05 else "missed"
        lines.append(f"- fixed-step HMC, {name}, within 1.05× of hand-written JAX: **{met}** ({shown})")
    nuts = figures["nuts"]
    models = list(dict.fromkeys(model for model, _ in nuts))
    ratio = {m: nuts[m, mcmc_bench.PPL_NUTS]["ratio"] for m in models}
    shown = ", ".join(f"{r:.2f}× on {m}" for m, r in ratio.items())
    met = "met" if max(ratio.values()) <= 1.05 else "missed"
    lines.append(f"- NUTS, ppl mcmc.nuts within 1.05× of BlackJAX from the second call: **{met}** ({shown})")
    versus = {m: nuts[m, mcmc_bench.PPL_NUTS]["seconds"] / nuts[m, mcmc_bench.NUMPYRO]["seconds"] for m in models}
    shown = ", ".join(f"{r:.2f}× NumPyro's time on {m}" for m, r in versus.items())
    lines.append(f"- NUTS, ppl mcmc.nuts faster than NumPyro: **{'met' if max(versus.values()) < 1 else 'missed'}** ({shown})")
    chains = figures["chains"]
    shown = ", ".join(
        f"{m}: vmap {chains[m, 'vmap']['seconds']:.2f} s vs sequential {chains[m, 'sequential']['seconds']:.2f} s" for m in models
    )
    lines.append(f"- 4 chains (informational, chooses the default chain_method): {shown}")
    return lines


def quick_sizes(args):
    return max(args.sizes) < 1_000_000


def _smc_targets(filter_ratios, tempered_ratios):
    """The SMC targets: the bootstrap filter within 1.05x of hand-written JAX
    at every N; tempered SMC within 1.05x of BlackJAX."""
    lines = []
    if filter_ratios:
        shown = ", ".join(f"{r:.2f}× at N={n:,}" for n, r in filter_ratios.items())
        met = "met" if max(filter_ratios.values()) <= 1.05 else "missed"
        lines.append(f"- bootstrap particle filter, smc.particle_filter within 1.05× of hand-written JAX (same outputs): **{met}** ({shown})")
    if tempered_ratios:
        shown = ", ".join(f"{total:.2f}× in total, {step:.2f}× per step at N={n:,}" for n, (total, step) in tempered_ratios.items())
        met = "met" if max(total for total, _ in tempered_ratios.values()) <= 1.05 else "missed"
        lines.append(f"- tempered SMC, smc.tempered within 1.05× of BlackJAX: **{met}** ({shown})")
    return lines


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    start = time.perf_counter()
    command = "python -m benchmarks.run" + ("" if not argv else " " + " ".join(argv))
    lines = [
        "# Benchmarks: ppl vs hand-written JAX vs NumPyro (and BlackJAX)",
        "",
        f"- command: `{command}`",
        f"- machine: {machine_description()}",
        f"- ppl revision: {_git_revision()}",
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
    ]
    ok, medians, compile_results, body = True, {}, {}, []
    if not args.skip_importance:
        body += [
            "## (A) Importance sampling, polynomial regression with outliers (50 points)",
            "",
            "Steady state: median of interleaved repeats (systems alternate inside each repeat), random numbers "
            "drawn inside the timed call; × hand-written: ratio of medians. Compile: `jax.jit(...).lower()` "
            "(trace + lower) and `.compile()` of a fresh function (a fresh ppl model object) at that N.",
            "",
        ]
        table, ok, medians = importance_bench.run(
            args.sizes, lambda n: repeats_for(n, args.repeats_scale), args.sanity_size, set(args.diagnose_sizes)
        )
        body += table + [""]
    simple_medians = {}
    if not args.skip_simple:
        body += [
            "## (A2) Importance sampling, the simplest formulation (three scalar sites, one vector observation)",
            "",
            "`ys ~ Normal(a + b xs + c xs^2, 0.05)` on 50 points, `a, b, c ~ Normal(0, 1)`; likelihood weighting. "
            "Steady state as in (A); z: the mean log weight of each system against hand-written JAX's.",
            "",
        ]
        big = [n for n in args.sizes if n >= 10_000]
        table, simple_ok, simple_medians = importance_simple_bench.run(big, lambda n: repeats_for(n, args.repeats_scale))
        ok &= simple_ok
        body += table + [""]
    if not args.skip_compile:
        body += [
            "## (B) Compile time as models grow: `jax.jit(jax.grad(log_density))`, first call",
            "",
            "A chain `x_i ~ Normal(x_{i-1}, 1)` of n scalar sites written as n separate sample calls; a fresh model "
            "per measurement. trace+lower and XLA compile are timed on a second fresh model with "
            "`jax.jit(...).lower()` and `.compile()`. (GenJAX, as reported in the issue: 8 s, 55 s, 353 s for n = 10, 25, 50.)",
            "",
        ]
        table, compile_results = compile_bench.run(args.compile_sizes)
        body += table + [""]
    vae_medians, vae_cpu = {}, {}
    if not args.skip_vae:
        body += [
            "## (C) VAE training step (binarised digits, batch 128, hidden 200, latent 10, optax.adam(1e-3))",
            "",
            "ppl (`vi.amortized` guide, `vi.per_datum(vi.elbo(...))`, `value_and_grad_estimate`), hand-written JAX "
            "+ optax and NumPyro SVI (`Trace_ELBO`, networks through `nnx_module`), the same flax nnx networks "
            "and initial weights; one jitted call per training step.",
            "",
        ]
        table, vae_medians, vae_cpu = vae_bench.run(repeats=args.vae_repeats)
        body += table + [""]
    mh_medians = {}
    if not args.skip_mh:
        body += [
            "## (D) One Metropolis-Hastings step on a 100-site model",
            "",
            f"A Gaussian random walk of {mh_bench.NUM_LATENTS} scalar latents (one `ppl.sample` each) observed through "
            f"one vector site; a step redraws z{mh_bench.SITE} from its prior conditional and accepts with probability "
            "min(1, exp(log_weight)): in ppl `model.regenerate(key, trace, ppl.select(...), args)`, hand-written as "
            "a log density function of the 100 values with the current log density carried. "
            f"{mh_bench.STEPS} steps per timed call, inside one jitted `lax.scan`; median of interleaved repeats. "
            "Compile: `.lower()` (trace + lower) and `.compile()` of a fresh jitted chain (a fresh ppl model).",
            "",
        ]
        table, mh_ok, mh_medians = mh_bench.run(repeats=args.mh_repeats)
        ok &= mh_ok
        body += table + [""]
    mcmc_figures = {}
    if not args.skip_mcmc:
        body += [
            "## (E) MCMC: fixed-step HMC, NUTS, vmap vs sequential chains",
            "",
            "ppl's `mcmc.hmc` / `mcmc.nuts` as a user calls them, against hand-written JAX (HMC), BlackJAX and "
            "NumPyro, with statistical checks that every system samples the same posterior.",
            "",
        ]
        table, mcmc_ok, mcmc_figures = mcmc_bench.run(repeats=args.mcmc_repeats)
        ok &= mcmc_ok
        body += table + [""]
    if not args.skip_adaptation:
        body += [
            "## (F) NUTS metric adaptations: effective samples per gradient evaluation",
            "",
            "`mcmc.nuts(..., num_warmup=1000, num_samples=1000, num_chains=4, adaptation=...)`, key 0; ESS: "
            "`ppl.inference.diagnostics.ess_bulk` over every scalar; gradients: the sum of `n_steps` over the kept "
            "draws of all chains. `\"low_rank\"` holds its metric densely (O(d^2) per leapfrog step).",
            "",
        ]
        body += adaptation_bench.run()[0] + [""]
    smc_ratios, tempered_ratios = {}, {}
    if not args.skip_smc:
        table, smc_ratios = smc_bench.run(sizes=args.sizes)
        body += table + [""]
    if not args.skip_tempered:
        table, tempered_ratios = tempered_bench.run(sizes=(1_000, 4_000) if quick_sizes(args) else (1_000, 4_000, 16_000))
        body += table + [""]
    if not args.skip_rejection:
        body += rejection_bench.run()[0] + [""]
    if not args.skip_svgd:
        body += svgd_bench.run()[0] + [""]
    if not args.skip_flow:
        body += flow_bench.run()[0] + [""]
    targets = _targets(medians, compile_results, args.sizes, args.compile_sizes)
    extra = _smc_targets(smc_ratios, tempered_ratios)
    lines += targets[:-1] + _simple_targets(simple_medians) + _vae_targets(vae_medians, vae_cpu) + _mh_targets(mh_medians) + _mcmc_targets(mcmc_figures) + extra + [""] + body
    lines.append(f"Total wall time of this run: {time.perf_counter() - start:.0f} s.")
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(report)
        print(f"wrote {args.output}")
    if not ok:
        print("SANITY CHECK FAILED: the systems do not agree (see the table)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
