"""Quickstart: polynomial regression with outliers, by importance sampling.

Each data point is either an inlier, y ~ Normal(poly(x), 0.1), or (with
probability 0.1) an outlier, y ~ Normal(0, 3). We simulate a data set from the
model itself, condition on the observed ys, and infer the coefficients and
which points are outliers, twice:

1. likelihood weighting: latent choices drawn from the prior (the default of
   ``ppl.inference.importance``). Simple, but prior draws rarely land where
   the posterior is, so the effective sample size (ESS) is tiny;
2. a custom proposal, itself a generative function: coefficients from a
   Gaussian around a trimmed least-squares fit, and each point's outlier flag
   from its exact conditional given the coefficients (Bayes' rule).

Run it with ``make run`` (or ``.venv/bin/python examples/quickstart.py``).
It prints a simulated trace, a posterior summary and the log marginal
likelihood, and saves a plot to examples/output/quickstart.png.
"""

import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

import ppl
from ppl import dist

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NUM_PARTICLES = 100_000
NOISE = 0.1  # standard deviation of an inlier around the curve
OUTLIER_PROB = 0.1
OUTLIER_SCALE = 3.0  # outliers are Normal(0, OUTLIER_SCALE), ignoring the curve
DATA_SEED = 10  # a seed whose simulated data set has a few clear outliers


# ----- the model ----------------------------------------------------------


def poly(x, coeffs):
    return coeffs[0] + coeffs[1] * x + coeffs[2] * x**2


@ppl.gen
def inlier(x, coeffs):
    return ppl.sample("y", dist.Normal(poly(x, coeffs), NOISE))


@ppl.gen
def outlier(x, coeffs):
    return ppl.sample("y", dist.Normal(0.0, OUTLIER_SCALE))


@ppl.gen
def point(x, coeffs):
    is_outlier = ppl.sample("outlier", dist.Bernoulli(OUTLIER_PROB))
    # The branch's choices nest under "y": the observed value is at "ys/y/y".
    return ppl.sample("y", ppl.cond(is_outlier, outlier, inlier, x, coeffs))


@ppl.gen
def model(xs):
    coeffs = ppl.sample("coeffs", dist.Normal(0.0, 1.0).expand([3]))
    return ppl.sample("ys", point.vmap(in_axes=(0, None))(xs, coeffs))


# ----- a data-driven proposal ----------------------------------------------


@ppl.gen
def outlier_flag(x, y, coeffs):
    """p(outlier | coeffs, y) by Bayes' rule: the exact conditional."""
    log_odds = (jnp.log(OUTLIER_PROB) + dist.Normal(0.0, OUTLIER_SCALE).log_prob(y)) - (
        jnp.log1p(-OUTLIER_PROB) + dist.Normal(poly(x, coeffs), NOISE).log_prob(y)
    )
    return ppl.sample("outlier", dist.Bernoulli(logits=log_odds))


@ppl.gen
def proposal(xs, ys, center, covariance):
    # Proposes every latent choice of the model, at the model's addresses.
    coeffs = ppl.sample("coeffs", dist.MultivariateNormal(center, covariance))
    ppl.sample("ys", outlier_flag.vmap(in_axes=(0, 0, None))(xs, ys, coeffs))


def trimmed_fit(xs, ys):
    """Least squares, dropping the worst point until all residuals are < 4 * NOISE.
    Returns the fit and its covariance from the points kept."""
    design = np.stack([np.ones_like(xs), xs, xs**2], axis=1)
    keep = np.ones(len(xs), dtype=bool)
    while True:
        coeffs = np.linalg.lstsq(design[keep], ys[keep], rcond=None)[0]
        residuals = np.where(keep, np.abs(ys - design @ coeffs), 0.0)
        if residuals.max() < 4 * NOISE or keep.sum() <= 4:
            break
        keep[residuals.argmax()] = False
    return coeffs, NOISE**2 * np.linalg.inv(design[keep].T @ design[keep])


# ----- reporting ------------------------------------------------------------


def step(message):
    """Print a progress line; returns a function that prints the time taken."""
    print(f"{message} ...", end=" ", flush=True)
    start = time.perf_counter()
    return lambda: print(f"done in {time.perf_counter() - start:.1f}s", flush=True)


def posterior_summary(result):
    mean = result.estimate(lambda c: c["coeffs"])
    sd = jnp.sqrt(result.estimate(lambda c: (c["coeffs"] - mean) ** 2))
    p_outlier = result.estimate(lambda c: c["ys"]["outlier"])
    return np.asarray(mean), np.asarray(sd), np.asarray(p_outlier)


def print_summary(results, true_coeffs, true_outliers):
    names = list(results)
    summaries = {name: posterior_summary(result) for name, result in results.items()}
    columns = lambda cells: "".join(f" {cell:>24}" for cell in cells)
    print(f"\n{'posterior':<21}" + columns(names))
    print(f"{'coefficient   (true)':<21}" + columns(["mean +- sd"] * len(names)))
    for i in range(3):
        cells = [f"{summaries[n][0][i]:.3f} +- {summaries[n][1][i]:.3f}" for n in names]
        print(f"{f'coeffs[{i}]':<13} ({true_coeffs[i]:6.3f})" + columns(cells))
    print("P(outlier | data)")
    for index in np.flatnonzero(true_outliers):
        print(f"{f'  point {index:2d} (outlier)':<21}" + columns(f"{summaries[n][2][index]:.3f}" for n in names))
    inliers = ~true_outliers
    print(f"{'  inliers, mean':<21}" + columns(f"{summaries[n][2][inliers].mean():.3f}" for n in names))
    print(f"{'  inliers, max':<21}" + columns(f"{summaries[n][2][inliers].max():.3f}" for n in names))
    print(f"{'ESS':<21}" + columns(f"{float(results[n].ess):,.1f}" for n in names))
    print(f"{'log marginal lik.':<21}" + columns(f"{float(results[n].log_marginal_likelihood):.3f}" for n in names))


def plot(path, xs, ys, true_coeffs, true_outliers, results, key):
    grid = np.linspace(xs.min(), xs.max(), 200)
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.8), sharey=True)
    for ax, (name, result), key in zip(np.atleast_1d(axes), results.items(), jax.random.split(key, len(results))):
        draws = np.asarray(result.resample(key, 50).choices["coeffs"])
        for i, coeffs in enumerate(draws):
            label = "posterior draws (50, resampled)" if i == 0 else None
            ax.plot(grid, poly(grid, coeffs), color="tab:blue", alpha=0.15, lw=1, label=label)
        ax.plot(grid, poly(grid, true_coeffs), "k--", lw=2, label="true curve")
        ax.scatter(xs[~true_outliers], ys[~true_outliers], s=18, color="k", zorder=3, label="inliers")
        ax.scatter(xs[true_outliers], ys[true_outliers], s=60, color="tab:red", marker="x", zorder=3,
                   label="true outliers")  # fmt: skip
        ax.set_title(f"{name}  (ESS {float(result.ess):,.1f} of {NUM_PARTICLES:,})")
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("y")
    legend = axes[0].legend(loc="upper center", fontsize=9)
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
    fig.suptitle("Polynomial regression with outliers: importance sampling with ppl")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----- main -------------------------------------------------------------------


def main():
    xs = jnp.linspace(-1.0, 1.0, 25)

    done = step("simulating a data set from the model")
    truth = model.simulate(jax.random.key(DATA_SEED), (xs,))
    done()
    print("\nThe simulated trace (choices at '/'-separated addresses):")
    print(ppl.format_trace(truth))
    print(f"{int(truth.choices['ys']['outlier'].sum())} of {len(xs)} points are outliers\n")
    true_coeffs = np.asarray(truth.choices["coeffs"])
    true_outliers = np.asarray(truth.choices["ys"]["outlier"]).astype(bool)
    ys = truth.choices["ys"]["y"]["y"]
    observations = {"ys": {"y": {"y": ys}}}

    done = step(f"likelihood weighting, {NUM_PARTICLES:,} particles")
    prior_result = ppl.inference.importance(jax.random.key(1), model, (xs,), observations, NUM_PARTICLES)
    prior_result.log_weights.block_until_ready()
    done()

    done = step(f"custom proposal, {NUM_PARTICLES:,} particles")
    center, covariance = trimmed_fit(np.asarray(xs), np.asarray(ys))
    proposal_args = (xs, ys, jnp.asarray(center), jnp.asarray(4.0 * covariance))  # twice the sd: heavier tails
    custom_result = ppl.inference.importance(
        jax.random.key(2), model, (xs,), observations, NUM_PARTICLES, proposal=proposal, proposal_args=proposal_args
    )
    custom_result.log_weights.block_until_ready()
    done()

    results = {"likelihood weighting": prior_result, "custom proposal": custom_result}
    print_summary(results, true_coeffs, true_outliers)

    path = Path(os.environ.get("QUICKSTART_PLOT", Path(__file__).with_name("output") / "quickstart.png"))
    done = step("\nplotting")
    plot(path, np.asarray(xs), np.asarray(ys), true_coeffs, true_outliers, results, jax.random.key(3))
    done()
    print(f"saved the plot to {path}")


if __name__ == "__main__":
    main()
