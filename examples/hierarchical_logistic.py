"""Hierarchical logistic regression by NUTS, with leave-one-out cross-validation.

Synthetic data (a fixed seed): N rows, each a binary choice ``y`` made by a
member of one of J groups, with K covariates ``x``. Groups differ in their
baseline propensity (an intercept per group, drawn around a population mean);
the covariates' effects (the slopes) are shared:

    mu ~ Normal(0, 2),   tau ~ HalfNormal(1),   slopes ~ Normal(0, 1)^K,
    intercept[j] ~ Normal(mu, tau)                       (j = 1..J, one choice of shape (J,))
    y[i] ~ Bernoulli(logits = intercept[group[i]] + x[i] . slopes)   (i = 1..N)

Each row is one call of a ``row`` submodel, vectorised with ``row.vmap``:
one observed choice per row, so the log likelihood that ``to_arviz()``
exports is pointwise, of shape (chains, draws, N), which is what
``arviz.loo`` (Pareto-smoothed importance sampling leave-one-out
cross-validation) needs. The data are simulated from the model itself, with
chosen values of mu, tau and the slopes; the group sizes are unequal, so some
intercepts are pinned down by hundreds of rows and some by a handful, and
the small groups' intercepts are shrunk towards mu.

Run it with ``.venv/bin/python examples/hierarchical_logistic.py`` (under a
minute, most of it compiling). It prints the diagnostics table
(``result.summary()``) with the true values beside it, the number of
divergences, and the output of ``arviz.loo``; it saves
examples/output/hierarchical_logistic.png: the posterior medians and 90%
intervals of the group intercepts against their true values, and of the
slopes.

Measured (data seed 0, sampler seed 1, 4 chains x 1000 draws after 1000
warmup): no divergences, bulk ESS >= 3968 and R-hat <= 1.003 for every
scalar; elpd_loo -1584.1 (SE 26.9), p_loo 13.0 (about the 17 parameters,
less the pooling), every Pareto k below 0.7; 11 of the 12 true intercepts
inside their 90% intervals.
"""

import time
from pathlib import Path

import arviz
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

import ppl
from ppl import dist
from ppl.inference import mcmc

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NUM_GROUPS = 12
NUM_ROWS = 3000
NUM_COVARIATES = 3
TRUE_MU, TRUE_TAU = -0.5, 1.0
TRUE_SLOPES = (1.0, -0.7, 0.3)
DATA_SEED = 0
NUM_WARMUP = 1000
NUM_SAMPLES = 1000
NUM_CHAINS = 4
SEED = 1
OUTPUT_PATH = Path(__file__).with_name("output") / "hierarchical_logistic.png"


# ----- the model ------------------------------------------------------------------


@ppl.gen
def row(intercepts, slopes, group, x):
    """One row: a binary choice with a logit from its group's intercept and the covariates."""
    ppl.sample("y", dist.Bernoulli(logits=intercepts[group] + x @ slopes))


@ppl.gen
def model(groups, xs, num_groups):
    """``groups``: (N,) group indices, ``xs``: (N, K) covariates, ``num_groups``: J (a Python int)."""
    mu = ppl.sample("mu", dist.Normal(0.0, 2.0))
    tau = ppl.sample("tau", dist.HalfNormal(1.0))
    slopes = ppl.sample("slopes", dist.Normal(0.0, 1.0).expand([xs.shape[1]]))
    intercepts = ppl.sample("intercepts", dist.Normal(mu, tau).expand([num_groups]))
    # No return value: returning the rows' choices would make every datum a "derived quantity",
    # 3000 constant rows in result.retvals and in the summary.
    ppl.sample("rows", row.vmap(in_axes=(None, None, 0, 0))(intercepts, slopes, groups, xs))


# ----- synthetic data -----------------------------------------------------------------


def simulate_data(seed=DATA_SEED, num_rows=NUM_ROWS, num_groups=NUM_GROUPS):
    """Group indices (unequal group sizes), covariates, and a trace of the model
    with mu, tau and the slopes fixed at the true values (the intercepts and the
    choices drawn from the model). Returns ``(args, observations, truth)``."""
    key_groups, key_sizes, key_xs, key_model = jax.random.split(jax.random.key(seed), 4)
    group_probs = jax.random.dirichlet(key_sizes, jnp.ones(num_groups))
    groups = jnp.sort(jax.random.choice(key_groups, num_groups, (num_rows,), p=group_probs))
    xs = jax.random.normal(key_xs, (num_rows, len(TRUE_SLOPES)))
    args = (groups, xs, num_groups)
    fixed = {"mu": jnp.asarray(TRUE_MU), "tau": jnp.asarray(TRUE_TAU), "slopes": jnp.asarray(TRUE_SLOPES)}
    trace, _ = model.generate(key_model, fixed, args)
    truth = {name: np.asarray(trace.choices[name]) for name in ("mu", "tau", "slopes", "intercepts")}
    return args, {"rows": {"y": trace.choices["rows"]["y"]}}, truth


# ----- inference and reporting -----------------------------------------------------------


def sample(args, observations, seed=SEED, num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES, num_chains=NUM_CHAINS,
           progress=True):  # fmt: skip
    return mcmc.nuts(jax.random.key(seed), model, args, observations, num_warmup=num_warmup, num_samples=num_samples,
                     num_chains=num_chains, progress=progress)  # fmt: skip


def report(result, truth, loo):
    print(result.summary())
    values = ", ".join(f"{name} = {np.array2string(value, precision=2)}" for name, value in truth.items())
    print(f"true values: {values}")
    print(f"{int(np.sum(result.stats['diverging']))} divergent transitions")
    print(loo)


def plot(result, truth, groups, path):
    intercepts = np.asarray(result.samples["intercepts"]).reshape(-1, len(truth["intercepts"]))
    slopes = np.asarray(result.samples["slopes"]).reshape(-1, len(truth["slopes"]))
    group_sizes = np.bincount(np.asarray(groups), minlength=intercepts.shape[1])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 1]})
    for ax, draws, true, labels in [
        (left, intercepts, truth["intercepts"], [f"{j}\n(n={n})" for j, n in enumerate(group_sizes)]),
        (right, slopes, truth["slopes"], [f"slope {k}" for k in range(slopes.shape[1])]),
    ]:
        low, median, high = np.quantile(draws, [0.05, 0.5, 0.95], axis=0)
        positions = np.arange(draws.shape[1])
        ax.errorbar(positions, median, yerr=[median - low, high - median], fmt="o", color="tab:blue", capsize=3,
                    label="posterior median, 90% interval")  # fmt: skip
        ax.scatter(positions, true, marker="x", s=60, color="tab:red", zorder=3, label="true value")
        ax.set_xticks(positions, labels, fontsize=8)
        ax.grid(alpha=0.3)
    mu = np.median(np.asarray(result.samples["mu"]))
    left.axhline(mu, color="k", lw=0.8, ls="--", label="posterior median of mu")
    left.set_title("group intercepts (n = rows in the group)")
    left.legend(fontsize=8)
    right.set_title("shared slopes")
    fig.suptitle(f"hierarchical logistic regression: {len(groups)} rows, {intercepts.shape[1]} groups, NUTS")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(num_rows=NUM_ROWS, num_groups=NUM_GROUPS, num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES,
         num_chains=NUM_CHAINS, seed=SEED, plot_path=OUTPUT_PATH, progress=True):  # fmt: skip
    """Simulates the data, samples the posterior, prints the summary and the
    LOO estimate and saves the plot (``plot_path=None``: no plot). Returns
    ``(result, idata, loo, truth)``."""
    start = time.perf_counter()
    args, observations, truth = simulate_data(DATA_SEED, num_rows, num_groups)
    result = sample(args, observations, seed, num_warmup, num_samples, num_chains, progress)
    idata = result.to_arviz()
    loo = arviz.loo(idata, pointwise=True)
    report(result, truth, loo)
    if plot_path is not None:
        plot(result, truth, args[0], Path(plot_path))
        print(f"saved {plot_path}")
    print(f"total time {time.perf_counter() - start:.1f}s")
    return result, idata, loo, truth


if __name__ == "__main__":
    main()
