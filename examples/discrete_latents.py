"""Discrete latents: four gradient estimators for one Gaussian mixture.

A 1-D mixture of three unit-variance Gaussians with equal weights. Each of
200 data points (simulated once, fixed seed) has a latent component
c_i ~ Categorical(1/3, 1/3, 1/3) and x_i ~ Normal(means[c_i], 1). The
component means are model parameters; the guide is free-form,
q(c_i) = Categorical(logits[i]), one row of logits per point. Both are
learned together by maximising ``vi.elbo(model, guide)``.

The component choices can't be reparameterised, so the ELBO's gradient
with respect to the guide's logits needs one of ADEV's other strategies. We
pick it by address (``strategies={"points/component": ...}``) and train four
times, with the same optimiser, steps and keys:

1. REINFORCE (``Reinforce(baseline=None)``): score function times the
   whole ELBO. The 200 choices form one vectorised site, so each datum's
   score is multiplied by a learning signal that includes the other 199
   points' noise;
2. REINFORCE with a sampled baseline (``Reinforce()``): the same, minus the
   ELBO at an independent draw. Lower variance, but the learning signal is
   still shared by all points;
3. enumeration (``Enumerate()``): each point's three values are summed
   exactly, with the other points held at their sampled values (200 x 3
   continuations under ``vmap``);
4. measure-valued derivatives (``MeasureValued()``): for a categorical,
   d/dp_k E f = f(k), with the same per-point replacements as enumeration.
   It differentiates the probabilities, not the logits, but gives the same
   gradient as enumeration here.

All four are unbiased, so the differences are in variance and cost: the
two REINFORCE variants run the model once or twice per step, enumeration
and MVD run the rest of the program after the choice (here, the model's
density of all 200 points) 200 x 3 times, so their cost per step grows as
N^2 for N points. Every estimator first
trains for NUM_STEPS steps; then the faster ones go on until they have
used as much wall-clock time as the slowest, for a comparison at equal
time.

The script prints a table: milliseconds per step; the ELBO after
NUM_STEPS steps and at equal time (exact: this model allows a closed form,
which makes a check independent of the estimators); and the variance of
each estimator's gradient at its run's final parameters. It saves two
plots under examples/output/: discrete_latents_objective.png, the ELBO's
distance to its ceiling (max over the means of log p(x), found by EM)
against steps and against wall-clock time; and discrete_latents_variance.png,
the variance of each estimator's gradient (log scale) at checkpoints of the
enumeration run, so that every estimator is measured at the same
parameters. Timings are wall-clock on whatever else the machine is doing.

Run it with ``.venv/bin/python examples/discrete_latents.py`` (about 25 s
of CPU time, most of it compiling; longer on a busy machine).
"""

import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

import ppl
from ppl import dist
from ppl.inference import vi
from ppl.transforms import Enumerate, MeasureValued, Reinforce

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NUM_COMPONENTS = 3
NUM_POINTS = 200
TRUE_MEANS = (-3.0, 0.0, 2.5)  # close enough that some points are ambiguous
SCALE = 1.0  # each component's standard deviation
INITIAL_MEANS = (-1.0, 0.0, 1.0)  # ordered like the truth: no label switching to untangle
DATA_SEED = 0
NUM_STEPS = 2000
LEARNING_RATE = 0.05
CHUNK = 100  # steps per timed call of vi.fit (one compiled lax.scan)
NUM_VARIANCE_KEYS = 500
VARIANCE_CHECKPOINTS = (0, 100, 500, 2000)  # steps of the enumeration run
COMPONENT = "points/component"  # the address of the discrete choices

ESTIMATORS = {
    "REINFORCE": Reinforce(baseline=None),
    "REINFORCE + baseline": Reinforce(),
    "enumeration": Enumerate(),
    "MVD": MeasureValued(),
}
COLORS = {"REINFORCE": "tab:red", "REINFORCE + baseline": "tab:orange", "enumeration": "tab:blue", "MVD": "tab:green"}
LINE_STYLES = {"MVD": {"ls": "--"}}  # MVD's line lies on enumeration's: dashed, so both show


# ----- the model and the guide ------------------------------------------------


@ppl.gen
def point(means):
    component = ppl.sample("component", dist.Categorical(logits=jnp.zeros(NUM_COMPONENTS)))
    return ppl.sample("x", dist.Normal(means[component], SCALE))


@ppl.gen
def model(params):
    # One vmapped site per address: all 200 components are one random choice
    # to ADEV, which is what makes plain REINFORCE so noisy here.
    return ppl.sample("points", point.repeat(NUM_POINTS)(params["means"]))


@ppl.gen
def point_guide(logits):
    return ppl.sample("component", dist.Categorical(logits=logits))


@ppl.gen
def guide(params):
    return ppl.sample("points", point_guide.vmap()(params["logits"]))


def objective(strategy):
    """The ELBO whose component choices' gradients come from ``strategy``."""
    return vi.elbo(model, guide, strategies={COMPONENT: strategy})


def initial_params():
    return {"means": jnp.asarray(INITIAL_MEANS), "logits": jnp.zeros((NUM_POINTS, NUM_COMPONENTS))}


def simulate_data(key):
    """The observed xs, from the model at the true means."""
    trace = model.simulate(key, ({"means": jnp.asarray(TRUE_MEANS)},))
    return trace.choices["points"]["x"]


# ----- closed forms, for checking ----------------------------------------------


def log_joint_table(means, xs):
    """log p(c_i = k, x_i) for every point i and component k: shape (N, K)."""
    return jnp.log(1.0 / NUM_COMPONENTS) + dist.Normal(means, SCALE).log_prob(xs[:, None])


@jax.jit  # evaluated after every timed call: one dispatch, not one per operation
def exact_elbo(params, xs):
    """sum_i sum_k q_ik (log p(k, x_i) - log q_ik): the objective, without noise."""
    log_q = jax.nn.log_softmax(params["logits"])
    return jnp.sum(jnp.exp(log_q) * (log_joint_table(params["means"], xs) - log_q))


def log_marginal_likelihood(means, xs):
    """log p(x) at ``means``: the ELBO's ceiling, reached when q is the posterior."""
    return jnp.sum(jax.nn.logsumexp(log_joint_table(means, xs), axis=1))


def best_log_likelihood(xs, num_iterations=500):
    """max over the means of log p(x), by EM from the initial means: the
    ceiling of every run's ELBO (the plots show the distance to it)."""

    def update(_, means):
        responsibilities = jax.nn.softmax(log_joint_table(means, xs), axis=1)
        return responsibilities.T @ xs / responsibilities.sum(axis=0)

    means = jax.lax.fori_loop(0, num_iterations, update, jnp.asarray(INITIAL_MEANS))
    return float(log_marginal_likelihood(means, xs))


# ----- training and measuring ----------------------------------------------------


class Run:
    """Training with one estimator: vi.fit in timed calls of CHUNK steps
    (each one compiled lax.scan), resumable. Records, after each call, the
    step, the elapsed time and the exact ELBO, and keeps the parameters at
    the ``checkpoints`` (steps)."""

    def __init__(self, strategy, xs, key, optimizer, checkpoints=()):
        self.xs, self.key, self.optimizer = xs, key, optimizer
        self.target = objective(strategy)
        self.args = ({"points": {"x": xs}},)
        # Compile outside the clock: fit caches its chunk on (objective, optimizer).
        vi.fit(self.target, initial_params(), optimizer, CHUNK, self.args, key=key, progress=False)
        self.params, self.state, self.checkpoints = initial_params(), None, checkpoints
        self.steps, self.times, self.elbo = [0], [0.0], [float(exact_elbo(self.params, xs))]
        self.saved = {0: self.params} if 0 in checkpoints else {}

    def until(self, num_steps=0, seconds=0.0):
        """Train until both ``num_steps`` steps and ``seconds`` seconds are done."""
        while self.steps[-1] < num_steps or self.times[-1] < seconds:
            todo = CHUNK if self.steps[-1] >= num_steps else min(CHUNK, num_steps - self.steps[-1])
            start = time.perf_counter()
            result = vi.fit(self.target, self.params, self.optimizer, todo, self.args, key=self.key,
                            state=self.state, progress=False)  # fmt: skip
            jax.block_until_ready(result.params)
            self.times.append(self.times[-1] + time.perf_counter() - start)
            self.state, self.params = result.state, result.params
            self.steps.append(self.steps[-1] + todo)
            self.elbo.append(float(exact_elbo(self.params, self.xs)))
            if self.steps[-1] in self.checkpoints:
                self.saved[self.steps[-1]] = self.params
        return self

    def elbo_at(self, step):
        """The exact ELBO when ``step`` steps were done."""
        return self.elbo[self.steps.index(step)]

    @property
    def seconds_per_step(self):
        """Over the fastest call: the least slowed by other processes (the
        machine may be shared), so the most repeatable measure of the cost."""
        return float(np.min(np.diff(self.times) / np.diff(self.steps)))


def variance_function(strategy, xs):
    """``(params, keys) -> {"logits": ..., "means": ...}``: the per-coordinate
    variance of the gradient estimate over ``keys``, summed (the trace of its
    covariance), for the guide's logits and the model's means. Jitted once
    per estimator, with the parameters an argument, so checkpoints reuse it."""
    target = objective(strategy)
    observations = {"points": {"x": xs}}

    @jax.jit
    def variances(params, keys):
        grads = jax.vmap(lambda key: target.grad_estimate(key, params, observations))(keys)
        return {name: jnp.sum(jnp.var(grads[name], axis=0)) for name in ("logits", "means")}

    return lambda params, keys: {part: float(value) for part, value in variances(params, keys).items()}


# ----- reporting ---------------------------------------------------------------------


TABLE_WIDTHS = (22, 8, 11, 11, 10, 12, 11)


def table_row(cells):
    """The first cell left-aligned, the others right-aligned, TABLE_WIDTHS wide."""
    first, *rest = zip(cells, TABLE_WIDTHS, strict=True)
    return f"{first[0]:<{first[1]}} " + " ".join(f"{cell:>{width}}" for cell, width in rest)


def print_table(runs, num_steps, final_variances, ceiling, num_keys):
    columns = ("estimator", "ms/step", f"ELBO@{num_steps}", "steps@time", "ELBO@time", "gvar logits", "gvar means")
    header = table_row(columns)
    print("\n" + header + "\n" + "-" * len(header))
    for name, run in runs.items():
        variance = final_variances[name]
        print(table_row((name, f"{1e3 * run.seconds_per_step:.3f}", f"{run.elbo_at(num_steps):.2f}", f"{run.steps[-1]}",
                         f"{run.elbo[-1]:.2f}", f"{variance['logits']:.4g}", f"{variance['means']:.4g}")))  # fmt: skip
    print(f"max over the means of log p(x) = {ceiling:.2f}, the ceiling of the ELBO (all ELBOs are exact)")
    print(f"ms/step: fastest of the calls of {CHUNK} steps. ELBO@{num_steps}: after {num_steps} steps. "
          "steps@time, ELBO@time: at the end of the equal-time runs.")  # fmt: skip
    print(f"gvar: sum over coordinates of the gradient's variance over {num_keys} keys, at each run's final parameters")


def plot_objective(path, runs, num_steps, ceiling):
    """The distance to the ceiling, log scale, against steps (the first
    ``num_steps``) and against wall-clock time (the equal-time runs)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for name, run in runs.items():
        gap = np.maximum(ceiling - np.asarray(run.elbo), 1e-2)
        style = dict(color=COLORS[name], lw=2, label=name, **LINE_STYLES.get(name, {}))
        axes[0].plot(run.steps, gap, marker=".", **style)
        axes[1].plot(run.times, gap, **style)
    axes[0].set_xlim(0, num_steps)
    axes[0].set_xlabel("optimiser step")
    axes[1].set_xlabel("wall-clock time (s), compilation excluded")
    axes[0].set_ylabel("max log p(x) - ELBO  (nats, exact)")
    for ax in axes:
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[1].legend()
    fig.suptitle(f"Gaussian mixture, {NUM_POINTS} points: the ELBO's distance to its ceiling (same optimiser, keys)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_variance(path, variances):
    """``variances[name][step]``: the logits' gradient variance at that checkpoint."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, by_step in variances.items():
        steps = sorted(by_step)
        style = dict(color=COLORS[name], lw=2, marker="o", label=name, **LINE_STYLES.get(name, {}))
        ax.plot(steps, [by_step[s] for s in steps], **style)
    ax.set_yscale("log")
    ax.set_xscale("symlog", linthresh=100)
    ax.set_xlim(0, 1.2 * max(max(by_step) for by_step in variances.values()))
    ax.set_xlabel("step of the enumeration run (every estimator at the same parameters)")
    ax.set_ylabel("gradient variance, logits (sum over coordinates)")
    ax.set_title("Variance of the ELBO's gradient (MVD = enumeration here)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----- main -------------------------------------------------------------------------


def main(num_steps=NUM_STEPS, num_variance_keys=NUM_VARIANCE_KEYS, checkpoints=VARIANCE_CHECKPOINTS, output_dir=None):
    """Train with each estimator, measure variances, print and plot. Returns
    ``(runs, checkpoint_variances, final_variances)`` for tests."""
    output_dir = Path(output_dir or os.environ.get("DISCRETE_LATENTS_OUTPUT", Path(__file__).with_name("output")))
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = tuple(s for s in checkpoints if s <= num_steps)
    xs = simulate_data(jax.random.key(DATA_SEED))
    optimizer = optax.adam(LEARNING_RATE)  # one object: fit reuses its compiled steps

    print(f"training with each estimator: {num_steps} steps, Adam {LEARNING_RATE}, same keys")
    runs = {}
    for name, strategy in ESTIMATORS.items():
        run = Run(strategy, xs, jax.random.key(1), optimizer, checkpoints if name == "enumeration" else ())
        runs[name] = run.until(num_steps)
        print(f"  {name:<22} {run.times[-1]:6.2f}s, exact ELBO {run.elbo[-1]:9.2f}", flush=True)
    budget = max(run.times[-1] for run in runs.values())
    print(f"then the faster ones on, to the same wall-clock time ({budget:.2f}s)")
    for name, run in runs.items():
        run.until(seconds=budget)
        print(f"  {name:<22} {run.steps[-1]:6d} steps, exact ELBO {run.elbo[-1]:9.2f}", flush=True)

    print(f"measuring gradient variances over {num_variance_keys} keys")
    keys = jax.random.split(jax.random.key(2), num_variance_keys)
    reference = runs["enumeration"].saved
    checkpoint_variances, final_variances = {}, {}
    for name, strategy in ESTIMATORS.items():
        variances = variance_function(strategy, xs)
        checkpoint_variances[name] = {step: variances(params, keys)["logits"] for step, params in reference.items()}
        final_variances[name] = variances(runs[name].params, keys)

    print("logits gradient variance, every estimator at the enumeration run's parameters:")
    for name, by_step in checkpoint_variances.items():
        print(f"  {name:<22} " + "  ".join(f"step {step}: {value:.4g}" for step, value in sorted(by_step.items())))
    ceiling = best_log_likelihood(xs)
    print_table(runs, num_steps, final_variances, ceiling, num_variance_keys)
    plot_objective(output_dir / "discrete_latents_objective.png", runs, num_steps, ceiling)
    plot_variance(output_dir / "discrete_latents_variance.png", checkpoint_variances)
    print(f"saved the plots to {output_dir}/discrete_latents_*.png")
    return runs, checkpoint_variances, final_variances


if __name__ == "__main__":
    main()
