"""Tracking a stochastic volatility: the bootstrap particle filter against a
filter with a better proposal, at the same number of particles.

The model (Kim, Shephard and Chib 1998): a latent log-volatility x_t follows
a stationary AR(1) process and each day's return y_t is Gaussian with
standard deviation exp(x_t / 2),

    x_0 ~ Normal(mu, sigma / sqrt(1 - phi^2)),
    x_t ~ Normal(mu + phi (x_{t-1} - mu), sigma),
    y_t ~ Normal(0, exp(x_t / 2)),

with priors on (mu, phi, sigma). The model is generative, so it makes its
own data: ``generate`` with the parameters fixed at true values draws one
path x_0..x_T and its returns y_0..y_T. The filters then condition on the
returns *and* the true parameters (they are observed choices too), so they
estimate log p(y | parameters) (printed: log Z less the prior's log density
at the true parameters).

The bootstrap filter proposes x_t from its prior, blind to y_t: on a day
whose return is surprising for the predicted volatility, almost every
particle lands where the likelihood is small and the effective sample size
(ESS) collapses. The second filter proposes from a Gaussian (Laplace)
approximation of the locally optimal proposal p(x_t | x_{t-1}, y_t): as a
function of x_t, log p(x_t | x_{t-1}) + log p(y_t | x_t) is strictly
concave (a quadratic plus -x/2 - y^2 exp(-x) / 2), so a few Newton steps
from the prior mean find its mode, and the curvature there sets the
variance. Its weights p(x_t, y_t | x_{t-1}) / q(x_t) then vary little more
than p(y_t | x_{t-1}) does across the particles, which no proposal of x_t
alone can flatten (Pitt and Shephard's 1999 auxiliary filter looks ahead
for that, with the same kind of expansion of the likelihood).

The gain depends on how much one return tells about the day's volatility
against how far the volatility moves in a day. With parameters typical of
daily stock returns (phi about 0.95, sigma about 0.2 to 0.3) the bootstrap
filter already does well and a better proposal gains little (measured, N =
200, T = 200: at phi = 0.95, sigma = 0.3, mean ESS 142 against 137 and the
same sd of log Z, 0.69 and 0.67; at phi = 0.9, sigma = 0.6, ESS 139
against 129, sd 0.62 against 0.79). The example uses a volatile volatility,
phi = 0.8 and sigma = 1.5, where the gain is large.

The state is one-dimensional, so an exact reference is cheap: a grid
filter (the forward algorithm on 1,500 points, in float64) gives log Z and
the filtering means and standard deviations to many digits.

Run it with ``.venv/bin/python examples/smc_tracking.py`` (about 15 s, most
of it compiling the two filters). It prints, for each filter, log p(y |
parameters) (mean and standard error over independent runs, which are one
``jax.vmap`` over keys) against the grid's, the spread of log Z across
runs, the mean ESS and the number of steps that resampled, and saves to
examples/output/:

- smc_tracking_states.png: the filtered mean +- 2 sd of x_t against the
  true path and the grid filter's mean, bootstrap above, proposal below;
- smc_tracking_ess.png: the ESS before resampling at each step, both filters.

Measured (seed 0, T = 200, N = 200 particles, 16 runs): exact log p(y |
parameters) -242.44; bootstrap -243.34 +- 0.37 (sd across runs 1.49), mean
ESS 106 of 200, resampling at 90 of 200 steps; Laplace proposal -243.18 +-
0.19 (sd 0.77), mean ESS 134, resampling at 38 steps. (Both means lie below
the exact value by about half the variance of log Z: the estimates are
unbiased in Z, not in log Z.) The bootstrap needs about four times the
particles to match the proposal's spread: over 64 runs, the sd of log Z was
1.31 at N = 200 and 0.57 at N = 800 for the bootstrap, 0.69 at N = 200 for
the proposal.
"""

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

import ppl
from ppl import dist
from ppl.inference import smc

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TRUE_PARAMETERS = {"mu": -1.0, "phi": 0.8, "sigma": 1.5}  # a volatile volatility: see the docstring
NUM_STEPS = 200  # T: days after day 0
NUM_PARTICLES = 200
NUM_RUNS = 16  # independent filters, for the standard error of log Z
NEWTON_STEPS = 4  # the proposal's Newton iterations: see laplace_approximation
GRID_SIZE = 1500
SEED = 0
OUTPUT_DIR = Path(__file__).with_name("output")


# ----- the model ---------------------------------------------------------------------


@ppl.gen
def volatility_parameters():
    mu = ppl.sample("mu", dist.Normal(-1.0, 1.0))  # the long-run mean log-variance
    phi = ppl.sample("phi", dist.Uniform(-1.0, 1.0))  # persistence; |phi| < 1: stationary
    sigma = ppl.sample("sigma", dist.HalfNormal(2.0))  # volatility of the volatility
    return mu, phi, sigma


@ppl.gen
def volatility_step(carry, _):
    """One day: the carry is (x_{t-1}, mu, phi, sigma), so the step and a
    proposal both see the parameters."""
    x_previous, mu, phi, sigma = carry
    x = ppl.sample("x", dist.Normal(mu + phi * (x_previous - mu), sigma))
    ppl.sample("y", dist.Normal(0.0, jnp.exp(x / 2)))
    return (x, mu, phi, sigma), None


@ppl.gen
def stochastic_volatility(T):
    mu, phi, sigma = ppl.sample("parameters", volatility_parameters())
    x0 = ppl.sample("x0", dist.Normal(mu, sigma / jnp.sqrt(1.0 - phi**2)))
    ppl.sample("y0", dist.Normal(0.0, jnp.exp(x0 / 2)))
    return ppl.sample("steps", volatility_step.scan(T)((x0, mu, phi, sigma), None))


def simulate_data(key, num_steps):
    """``(true x_0..x_T, observations)``: one draw of the model with its
    parameters fixed (``generate``); the observations hold the returns and
    the true parameters, ready for a filter."""
    parameters = {"parameters": TRUE_PARAMETERS}
    trace, _ = stochastic_volatility.generate(key, parameters, (num_steps,))
    choices = trace.choices
    states = jnp.concatenate([choices["x0"][None], choices["steps"]["x"]])
    return states, {**parameters, "y0": choices["y0"], "steps": {"y": choices["steps"]["y"]}}


def log_prior_of_truth():
    """log p(true parameters): a filter's log Z less this is log p(y | parameters)."""
    log_density, _ = volatility_parameters.assess(TRUE_PARAMETERS, ())
    return float(log_density)


# ----- the proposal -----------------------------------------------------------------------


def laplace_approximation(mean, sigma, y, newton_steps=NEWTON_STEPS):
    """``(mode, sd)`` of the Gaussian approximation of p(x | x_{t-1}, y)
    proportional to Normal(x; mean, sigma) Normal(y; 0, exp(x / 2)).

    log target = -(x - mean)^2 / (2 sigma^2) - x / 2 - y^2 exp(-x) / 2 (+ const)
    gradient   = -(x - mean) / sigma^2 - 1 / 2 + y^2 exp(-x) / 2
    curvature  = -1 / sigma^2 - y^2 exp(-x) / 2  < 0 everywhere

    One mode, found by Newton's method from the prior mean. The gradient is
    convex, so from the left of the mode Newton never overshoots; from the
    right its first step does, and a cap of 3 sigma per step keeps it out
    of the far left, where exp(-x) is huge and each step gains little.
    ``newton_steps`` need not reach the mode exactly (the weights correct
    for q whatever it is): with the particles' predicted means, 4 steps gave
    the same ESS as 10 (measured)."""
    x = mean
    for _ in range(newton_steps):
        gradient = -(x - mean) / sigma**2 - 0.5 + 0.5 * y**2 * jnp.exp(-x)
        curvature = -1.0 / sigma**2 - 0.5 * y**2 * jnp.exp(-x)
        x = x - jnp.clip(gradient / curvature, -3.0 * sigma, 3.0 * sigma)
    curvature = -1.0 / sigma**2 - 0.5 * y**2 * jnp.exp(-x)
    return x, jnp.sqrt(-1.0 / curvature)


@ppl.gen
def laplace_proposal(carry, _, observation):
    """Proposes the step's x from the Laplace approximation of its locally
    optimal proposal. Its sd is below the prior's sigma, so its right tail
    (where the likelihood is flat, about exp(-x/2)) is lighter than the
    target's and the weights p / q grow without bound far to the right.
    Draws out there are rare, and the runs show no sign of trouble (log Z
    unbiased against the grid filter); a Student-t with the same centre and
    scale bounds the weights (measured, 5 degrees of freedom: a slightly
    lower ESS, 128 against 133, and a slightly smaller sd of log Z)."""
    x_previous, mu, phi, sigma = carry
    mode, sd = laplace_approximation(mu + phi * (x_previous - mu), sigma, observation["y"])
    ppl.sample("x", dist.Normal(mode, sd))


PROPOSALS = {"bootstrap": None, "Laplace proposal": laplace_proposal}


# ----- filters and the exact reference ----------------------------------------------------


def normal_log_density(x, mean, sd):
    """log Normal(x; mean, sd), elementwise in NumPy float64 (for the exact
    reference; scipy.stats would add 2 s of import to every run)."""
    return -0.5 * ((x - mean) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2.0 * np.pi)


def run_filters(key, observations, num_steps, num_particles, num_runs):
    """``{name: ParticleFilterResult}``, each with a leading axis of ``num_runs``
    independent runs (one ``jax.vmap`` over keys, compiled once)."""
    keys = jax.random.split(key, num_runs)
    results = {}
    for name, proposal in PROPOSALS.items():
        run = lambda k, proposal=proposal: smc.particle_filter(
            k, stochastic_volatility, (num_steps,), observations, num_particles, proposal=proposal)  # fmt: skip
        results[name] = jax.jit(jax.vmap(run))(keys)
    return results


def grid_filter(observations, grid_size=GRID_SIZE):
    """The exact filter on a grid of x (float64 NumPy): ``(log p(y | parameters),
    filtering means (T + 1,), filtering sds (T + 1,))`` for x_0..x_T."""
    mu, phi, sigma = (TRUE_PARAMETERS[name] for name in ("mu", "phi", "sigma"))
    stationary_sd = sigma / np.sqrt(1.0 - phi**2)
    grid = np.linspace(mu - 8.0 * stationary_sd, mu + 8.0 * stationary_sd, grid_size)
    cell = grid[1] - grid[0]  # density -> probability of a cell
    transition = np.exp(normal_log_density(grid[None, :], mu + phi * (grid[:, None] - mu), sigma)) * cell  # [from, to]
    ys = np.concatenate([[float(observations["y0"])], np.asarray(observations["steps"]["y"], float)])
    predicted = np.exp(normal_log_density(grid, mu, stationary_sd)) * cell
    log_z, means, sds = 0.0, [], []
    for y in ys:
        log_likelihood = normal_log_density(y, 0.0, np.exp(grid / 2))
        shift = np.max(log_likelihood)  # keeps exp() in range; added back to log Z
        joint = predicted * np.exp(log_likelihood - shift)
        total = np.sum(joint)
        filtered = joint / total
        log_z += np.log(total) + shift
        mean = filtered @ grid
        means.append(mean)
        sds.append(np.sqrt(filtered @ (grid - mean) ** 2))
        predicted = filtered @ transition
    return log_z, np.array(means), np.array(sds)


def filtered_moments(result):
    """Filtering mean and sd of x_1..x_T from one run's weighted particles, (T,) each."""
    weights = np.exp(np.asarray(result.filtered_log_weights, float))
    xs = np.asarray(result.filtered_choices["x"], float)
    mean = np.sum(weights * xs, axis=1)
    return mean, np.sqrt(np.sum(weights * (xs - mean[:, None]) ** 2, axis=1))


def summaries(results, log_prior):
    """Per filter: log p(y | parameters) per run, its mean and standard error,
    the mean ESS and the mean number of resampling steps per run."""
    table = {}
    for name, result in results.items():
        log_likelihoods = np.asarray(result.log_marginal_likelihood, float) - log_prior
        table[name] = {
            "log_likelihoods": log_likelihoods,
            "mean": log_likelihoods.mean(),
            "standard_error": log_likelihoods.std(ddof=1) / np.sqrt(log_likelihoods.size),
            "sd": log_likelihoods.std(ddof=1),
            "mean_ess": float(np.mean(result.ess)),
            "resampled": float(np.mean(np.sum(result.resampled, axis=1))),
        }
    return table


# ----- plots ----------------------------------------------------------------------------


def first_run(result):
    """One run (the first) of a result with a leading axis of runs."""
    return jax.tree.map(lambda leaf: leaf[0], result)


def plot_states(results, states, reference_means, path):
    """The filtered mean +- 2 sd of x_1..x_T (first run of each filter)."""
    fig, axes = plt.subplots(len(results), 1, figsize=(11, 3.2 * len(results)), sharex=True, squeeze=False)
    days = np.arange(1, len(states))
    for ax, (name, result) in zip(axes[:, 0], results.items(), strict=True):
        mean, sd = filtered_moments(first_run(result))
        ax.fill_between(days, mean - 2 * sd, mean + 2 * sd, alpha=0.3, label="filtered mean +- 2 sd")
        ax.plot(days, mean, lw=1.2, label="filtered mean")
        ax.plot(days, reference_means[1:], "k--", lw=0.8, label="exact filtered mean (grid)")
        ax.plot(days, np.asarray(states[1:]), ".", color="tab:red", ms=3, label="true x_t")
        ax.set_ylabel("log-volatility x_t")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8, ncol=2)
    axes[-1, 0].set_xlabel("day t")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_ess(results, num_particles, path):
    """The ESS before resampling at days 0..T (first run of each filter)."""
    fig, ax = plt.subplots(figsize=(11, 3.5))
    for name, result in results.items():
        ess = np.asarray(first_run(result).ess)
        ax.plot(np.arange(len(ess)), ess, lw=1, label=f"{name} (mean {ess.mean():.0f})")
    ax.axhline(0.5 * num_particles, color="k", ls=":", lw=0.8, label="resampling threshold N / 2")
    ax.set_ylim(0, 1.05 * num_particles)
    ax.set_xlabel("day t")
    ax.set_ylabel(f"ESS of {num_particles}")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ----- main ------------------------------------------------------------------------------


def main(num_steps=NUM_STEPS, num_particles=NUM_PARTICLES, num_runs=NUM_RUNS, seed=SEED, output_dir=OUTPUT_DIR):
    """Simulates the data, runs both filters ``num_runs`` times and the grid
    filter, prints the comparison and saves the plots (``output_dir=None``:
    no plots). Returns a dict: the data (``states``, ``observations``), the
    grid filter's ``log_z``, ``means`` and ``sds`` (x_0..x_T), the filters'
    ``results`` and the ``table`` printed."""
    start = time.perf_counter()
    data_key, filter_key = jax.random.split(jax.random.key(seed))
    states, observations = simulate_data(data_key, num_steps)
    results = run_filters(filter_key, observations, num_steps, num_particles, num_runs)
    reference, reference_means, reference_sds = grid_filter(observations)
    table = summaries(results, log_prior_of_truth())
    print(f"stochastic volatility, T = {num_steps} days, N = {num_particles} particles, {num_runs} runs per filter")
    print(f"log p(y | parameters): exact (grid filter) {reference:.2f}")
    for name, row in table.items():
        print(f"{name:>17}: log p(y | parameters) {row['mean']:.2f} +- {row['standard_error']:.2f} "
              f"(sd across runs {row['sd']:.2f}), mean ESS {row['mean_ess']:.0f} of {num_particles}, "
              f"resampled at {row['resampled']:.0f} of {num_steps} steps")  # fmt: skip
    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        paths = [output_dir / "smc_tracking_states.png", output_dir / "smc_tracking_ess.png"]
        plot_states(results, states, reference_means, paths[0])
        plot_ess(results, num_particles, paths[1])
        for path in paths:
            print(f"saved {path}")
    print(f"total time {time.perf_counter() - start:.1f}s")
    return {"states": states, "observations": observations, "log_z": reference, "means": reference_means,
            "sds": reference_sds, "results": results, "table": table}  # fmt: skip


if __name__ == "__main__":
    main()
