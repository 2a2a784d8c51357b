"""(C) One VAE training step (batch 128, hidden 200, latent 10) in ppl vs
hand-written JAX + optax vs NumPyro SVI: compile time, steady-state steps per
second, and a check that the three train to similar ELBOs (systems in
``vae_systems.py``)."""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import vae_systems as systems
from benchmarks.timing import interleaved, summary, timed

__all__ = ["run", "STEPS", "BASELINE", "MAIN"]

BASELINE = systems.BASELINE
MAIN = tuple(systems.SYSTEMS)  # one jitted call per step, as the issue asks
STEPS = 200  # training steps per timed call
_PURE = "params as pure dicts"


def _loop(step, steps=STEPS):
    """``steps`` jitted calls, threading the state: a user's training loop."""

    def run_steps(state, batch):
        for _ in range(steps):
            state, loss = step(state, batch)
        return state, loss

    return run_steps


def _scanned(step, steps=STEPS):
    """``steps`` steps inside one jitted ``lax.scan`` (what ``vi.fit`` runs per chunk)."""

    def run_steps(state, batch):
        state, losses = jax.lax.scan(lambda state, _: step(state, batch), state, None, length=steps)
        return state, losses[-1]

    return jax.jit(run_steps)


def _fit(objective, optimizer, steps=STEPS):
    """ppl's own driver: ``vi.fit`` resumed from the previous call's state (100-step chunks)."""
    from ppl.inference import vi

    def run_steps(state, batch):
        result = vi.fit(objective, None, optimizer, steps, ({"x": batch}, batch), state=state, progress=False)
        return result.state, -result.history[-1]

    return run_steps


def _fit_state(state, optimizer):
    from ppl.inference.vi import FitState

    return FitState(state.params, optimizer.init(state.params), state.key, jnp.zeros((), jnp.int32))


def _trace_and_lower_seconds(make, batch):
    """``.lower()`` of a fresh system's step (its XLA compile is the first call's remainder)."""
    system = make(jax.random.key(0), batch)
    start = time.perf_counter()
    system.step.lower(system.state, batch)
    return time.perf_counter() - start


def _train(system, batch, steps):
    """A fresh system's first call (timed) and ``steps - 1`` more:
    ((first call wall s, its CPU s), state, losses)."""
    start = time.process_time()
    first, (state, loss) = timed(system.step, system.state, batch)
    first_cpu = time.process_time() - start
    losses = [loss]
    for _ in range(steps - 1):
        state, loss = system.step(state, batch)
        losses.append(loss)
    return (first, first_cpu), state, np.asarray(jax.device_get(losses))


def _warm_up():
    """Pay JAX's one-time costs (backend start, first compilations of its own
    helpers) before the first system's first call is timed."""
    key = jax.random.key(0)
    jax.block_until_ready(jax.jit(jax.grad(lambda x, k: jnp.sum(jax.random.normal(k, (2,)) * x)))(1.0, key))
    systems.make_networks()  # flax's eager initialisation compiles its own small ops once


def _evaluate(params, images, num_samples=64):
    """The ELBO per image of ``params``, by the hand-written estimator averaged over ``num_samples`` draws."""
    one = jax.jit(lambda key: systems.hand_elbo(key, params, images) / images.shape[0])
    return float(np.mean([one(key) for key in jax.random.split(jax.random.key(123), num_samples)]))


def _variants(trained, batch):
    """name -> (fn(state, batch) -> (state, loss), initial state) for the timed runs."""
    variants = {name: (_loop(system.step), state) for name, (system, state) in trained.items()}
    for name, (system, state) in trained.items():
        variants[f"{name}, {STEPS} steps per jit (scan)"] = (_scanned(system.step), state)
    ppl_state = trained["ppl"][1]
    optimizer = optax.adam(systems.LEARNING_RATE)
    objective = systems.make_ppl_objective(ppl_state.params, batch)
    variants["ppl, vi.fit"] = (_fit(objective, optimizer), _fit_state(ppl_state, optimizer))
    for name in (BASELINE, "ppl"):
        system = systems.SYSTEMS[name](jax.random.key(0), batch, networks=systems.make_pure_networks)
        variants[f"{name}, {_PURE}"] = (_loop(system.step), system.state)
    return variants


def _time(variants, batch, repeats):
    """``{name: [wall seconds]}`` and ``{name: [process CPU seconds]}`` per timed call. CPU time
    counts this process's threads only, so it moves less than wall time when other
    processes load the machine (but it also counts any spinning of XLA's threads)."""
    states = {name: state for name, (_, state) in variants.items()}
    for name, (fn, _) in variants.items():  # compile and warm up
        states[name] = jax.block_until_ready(fn(states[name], batch))[0]
    cpu = {name: [] for name in variants}

    def call(name):
        def once(_):
            start = time.process_time()
            states[name], loss = jax.block_until_ready(variants[name][0](states[name], batch))
            cpu[name].append(time.process_time() - start)
            return states[name], loss

        return once

    times, _ = interleaved({name: call(name) for name in variants}, repeats)
    return times, cpu


def _steady_rows(times, cpu):
    per_step = {name: summary(np.asarray(seconds) / STEPS) for name, seconds in times.items()}
    cpu_per_step = {name: summary(np.asarray(seconds) / STEPS)[0] for name, seconds in cpu.items()}
    base, cpu_base = per_step[BASELINE][0], cpu_per_step[BASELINE]
    rows = [
        f"| {name} | {1 / median:.0f} | {median * 1e3:.3f} | {iqr * 1e3:.3f} | {median / base:.2f} "
        f"| {cpu_per_step[name] * 1e3:.3f} | {cpu_per_step[name] / cpu_base:.2f} |"
        for name, (median, iqr) in per_step.items()
    ]
    return rows, {name: median for name, (median, _) in per_step.items()}, cpu_per_step


def run(repeats=15, sanity_steps=500, log=print):
    """Markdown lines, ``{variant: median wall seconds per step}`` and the same for CPU seconds."""
    images, batch = systems.make_data()
    _warm_up()
    load_start = os.getloadavg()
    compile_rows, sanity_rows, trained = [], [], {}
    for name, make in systems.SYSTEMS.items():
        system = make(jax.random.key(0), batch)
        (first, first_cpu), state, losses = _train(system, batch, sanity_steps)
        trained[name] = (system, state)
        lower = _trace_and_lower_seconds(make, batch)
        compile_rows.append(f"| {name} | {first:.2f} | {first_cpu:.2f} | {lower:.2f} | {first - lower:.2f} |")
        params = system.params_of(state)
        tail = -losses[-100:].mean() / batch.shape[0]
        sanity_rows.append(
            f"| {name} | {-losses[0] / batch.shape[0]:.2f} | {tail:.2f} | {_evaluate(params, batch):.2f} "
            f"| {_evaluate(params, images):.2f} |"
        )
        log(f"vae: {name}: first call {first:.2f} s, ELBO/image over the last 100 of {sanity_steps} steps {tail:.2f}")
    times, cpu = _time(_variants(trained, batch), batch, repeats)
    rows, medians, cpu_medians = _steady_rows(times, cpu)
    lines = [
        f"Load average at the start of this section: {_load(load_start)}; at its end: {_load(os.getloadavg())}.",
        "",
        f"Steady state: {repeats} interleaved repeats of {STEPS} training steps per variant: a Python loop of "
        "jitted steps, each carrying its key and splitting it inside (as NumPyro's `svi.update` does), blocked "
        "once at the end; *scan*: the same step 200 times inside one jit; *vi.fit*: ppl's driver (jitted "
        "100-step scans); *params as pure dicts*: the same networks as `jax.tree_util.Partial`s over their "
        "weights, whose pytree flattening per call is cheap (NumPyro's `nnx_module` keeps pure dicts too). "
        "× hand-written: ratio of medians per step. CPU: median process CPU time per step (this process's "
        "threads), less sensitive than wall time to other processes' load.",
        "",
        "| variant | steps/s (median) | ms per step | IQR ms | × hand-written | CPU ms per step | CPU × hand-written |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Compile: the first call of a fresh system's jitted step (trace, lower, XLA compile, one step) and "
        "its process CPU time; trace+lower: `.lower()` of another fresh system's step; XLA compile: the rest "
        "of the first call (and one step).",
        "",
        "| system | first call s | first call CPU s | trace+lower s | XLA compile s |",
        "|---|---|---|---|---|",
        *compile_rows,
        "",
        f"Sanity: the same initial weights trained {sanity_steps} steps by each system (different random draws). "
        "ELBO per image: the first step's estimate, the mean estimate over the last 100 steps, and the final "
        "parameters' ELBO by one hand-written estimator (64 draws) on the training batch and on all 1,797 images.",
        "",
        "| system | ELBO/image, step 1 | last 100 steps | final, batch | final, all images |",
        "|---|---|---|---|---|",
        *sanity_rows,
    ]
    return lines, medians, cpu_medians


def _load(load):
    return ", ".join(f"{x:.2f}" for x in load)
