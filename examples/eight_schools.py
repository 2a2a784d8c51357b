"""Eight schools: the centred and the non-centred hierarchical model, by NUTS.

Rubin's (1981) eight schools data: the estimated effect ``y[j]`` of a
coaching programme on test scores in school j, with its standard error
``sigma[j]``. A hierarchical model pools the schools' effects:

    mu ~ Normal(0, 5),   tau ~ HalfCauchy(5),
    theta[j] ~ Normal(mu, tau),   y[j] ~ Normal(theta[j], sigma[j]).

With eight noisy data points, tau is barely identified, and the posterior of
(tau, theta) is a funnel: where tau is small, every theta[j] is squeezed
close to mu. NUTS adapts one step size for the whole posterior; a step that
fits the funnel's wide mouth is far too long for its neck, where the
trajectories diverge (the sampler flags them) and the chains get stuck,
so tau mixes badly and its small values are under-explored: the draws are
biased.

The non-centred parameterisation samples a standardised effect instead,

    theta_tilde[j] ~ Normal(0, 1),   theta[j] = mu + tau * theta_tilde[j],

which has the same posterior of (mu, tau, theta) but a geometry NUTS handles
well: (mu, tau, theta_tilde) is not a funnel under the prior, and with data
this weak the posterior is not either. theta is a derived quantity there,
the model's return value, so it comes back in ``result.retvals``.

Run it with ``.venv/bin/python examples/eight_schools.py`` (20 to 40 s,
most of it compiling the two samplers). For each parameterisation it prints
the number of divergent transitions (per chain too), the diagnostics table
(``result.summary()``) and the bulk effective sample size of tau; the point
is in those numbers: the centred model has divergences and a bulk ESS of tau
of a few hundred or less out of 4000 draws, the non-centred none (or a
handful) and an ESS of tau in the thousands. It saves to examples/output/:

- eight_schools_trace_centred.png, eight_schools_trace_noncentred.png:
  ArviZ trace plots of mu, tau and theta (divergences marked under each);
- eight_schools_rank.png: ArviZ rank plots of mu and tau, centred (left)
  beside non-centred (right): well-mixed chains have flat rank histograms;
- eight_schools_funnel.png: log tau against theta[0] with the divergent draws
  in red, centred beside non-centred: the centred chains cannot reach down
  the funnel's neck, and they diverge where they try.

Measured (seed 0, 4 chains x 1000 draws after 1000 warmup): centred 92
divergent transitions (per chain 16, 4, 59, 13), bulk ESS of tau 106 (tail
ESS 23, R-hat 1.045; the summary warns about all three); non-centred 0
divergences, bulk ESS of tau 2353, every R-hat <= 1.002. The centred chains
never go below log tau = -1.2; the non-centred ones reach -7.
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
from ppl.inference import diagnostics, mcmc

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])  # estimated effects
SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])  # their standard errors
OBSERVATIONS = {"schools": {"y": Y}}
NUM_WARMUP = 1000
NUM_SAMPLES = 1000
NUM_CHAINS = 4
SEED = 0
OUTPUT_DIR = Path(__file__).with_name("output")


# ----- the two parameterisations -------------------------------------------------


@ppl.gen
def centred_school(mu, tau, sigma):
    theta = ppl.sample("theta", dist.Normal(mu, tau))
    ppl.sample("y", dist.Normal(theta, sigma))


@ppl.gen
def noncentred_school(mu, tau, sigma):
    theta_tilde = ppl.sample("theta_tilde", dist.Normal(0.0, 1.0))
    theta = mu + tau * theta_tilde  # a derived quantity, not a random choice
    ppl.sample("y", dist.Normal(theta, sigma))
    return theta


def eight_schools(school):
    """The hierarchical model with the per-school submodel ``school``,
    vectorised over the schools; it returns what ``school`` returns, for
    all eight (nothing in the centred model, theta in the non-centred one)."""

    @ppl.gen
    def model(sigma):
        mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
        tau = ppl.sample("tau", dist.HalfCauchy(5.0))
        return ppl.sample("schools", school.vmap(in_axes=(None, None, 0))(mu, tau, sigma))

    return model


centred = eight_schools(centred_school)
noncentred = eight_schools(noncentred_school)
MODELS = {"centred": centred, "non-centred": noncentred}


# ----- sampling and diagnostics -----------------------------------------------------


def sample(model, seed=SEED, num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES, num_chains=NUM_CHAINS, progress=True):
    return mcmc.nuts(jax.random.key(seed), model, (SIGMA,), OBSERVATIONS, num_warmup=num_warmup,
                     num_samples=num_samples, num_chains=num_chains, progress=progress)  # fmt: skip


def theta(result):
    """theta's draws, (chains, draws, 8): a choice of the centred model, the
    return value (a derived quantity) of the non-centred one."""
    schools = result.samples["schools"]
    return np.asarray(schools["theta"] if "theta" in schools else result.retvals)


def divergences(result):
    return int(np.sum(result.stats["diverging"]))


def inference_data(result):
    """``result.to_arviz()`` with the posterior cut to mu, tau and theta, theta
    under one name in both models (``schools/theta`` among the centred model's
    choices, ``retval`` among the non-centred one's return values)."""
    idata = result.to_arviz()
    idata.posterior = idata.posterior[["mu", "tau"]].assign(theta=(("chain", "draw", "school"), theta(result)))
    return idata


def ess_bulk_tau(result):
    """The bulk effective sample size of tau (as in the summary table)."""
    return float(diagnostics.ess_bulk(result.samples["tau"]))


def report(name, result):
    per_chain = np.sum(np.asarray(result.stats["diverging"]), axis=1)
    print(f"\n===== {name}: {divergences(result)} divergent transitions of "
          f"{result.num_chains * result.num_samples} (per chain: {per_chain.tolist()})")  # fmt: skip
    print(result.summary())
    print(f"bulk ESS of tau: {ess_bulk_tau(result):.0f}")


# ----- plots ---------------------------------------------------------------------------


def plot_traces(idata, name, path):
    axes = arviz.plot_trace(idata, var_names=["mu", "tau", "theta"], compact=True, figsize=(12, 7))
    fig = axes.ravel()[0].figure
    fig.suptitle(f"eight schools, {name}: {int(idata.sample_stats['diverging'].sum())} divergences (ticks below)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_ranks(idatas, path):
    fig, axes = plt.subplots(2, len(idatas), figsize=(6 * len(idatas), 6.5), squeeze=False)
    for column, (name, idata) in enumerate(idatas.items()):
        arviz.plot_rank(idata, var_names=["mu", "tau"], ax=axes[:, column])
        for ax in axes[:, column]:
            ax.set_title(f"{name}: {ax.get_title()}")
    fig.suptitle("rank plots: a flat histogram per chain means the chains mix")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_funnels(results, path):
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 5), sharex=True, sharey=True, squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items(), strict=True):
        log_tau = np.log(np.asarray(result.samples["tau"])).ravel()
        theta0 = theta(result)[..., 0].ravel()
        diverging = np.asarray(result.stats["diverging"]).ravel()
        ax.scatter(theta0[~diverging], log_tau[~diverging], s=4, alpha=0.3, color="tab:blue", label="draws")
        ax.scatter(theta0[diverging], log_tau[diverging], s=14, color="tab:red", label=f"divergent ({diverging.sum()})")
        ax.set_xlabel("theta[0]")
        ax.set_ylabel("log tau")
        ax.set_title(name)
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
    fig.suptitle("eight schools: the funnel of (theta[0], log tau)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot(results, output_dir):
    """Saves the four PNGs; returns their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    idatas = {name: inference_data(result) for name, result in results.items()}
    paths = []
    for name, idata in idatas.items():
        paths.append(output_dir / f"eight_schools_trace_{name.replace('-', '')}.png")
        plot_traces(idata, name, paths[-1])
    paths.append(output_dir / "eight_schools_rank.png")
    plot_ranks(idatas, paths[-1])
    paths.append(output_dir / "eight_schools_funnel.png")
    plot_funnels(results, paths[-1])
    return paths


# ----- main ----------------------------------------------------------------------------


def main(num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES, num_chains=NUM_CHAINS, seed=SEED, output_dir=OUTPUT_DIR,
         progress=True):  # fmt: skip
    """Samples both parameterisations, prints their diagnostics and saves the
    plots (``output_dir=None``: no plots). Returns ``{name: MCMCResult}``."""
    start = time.perf_counter()
    results = {}
    for name, model in MODELS.items():
        results[name] = result = sample(model, seed, num_warmup, num_samples, num_chains, progress)
        report(name, result)
    print()
    for name, result in results.items():
        print(f"{name:>11}: {divergences(result):3d} divergences, bulk ESS of tau {ess_bulk_tau(result):5.0f} "
              f"of {result.num_chains * result.num_samples} draws")  # fmt: skip
    print("The funnel defeats NUTS in the centred model (divergences, tau mixes badly); "
          "the non-centred model, the same posterior, does not.")  # fmt: skip
    if output_dir is not None:
        for path in plot(results, output_dir):
            print(f"saved {path}")
    print(f"total time {time.perf_counter() - start:.1f}s")
    return results


if __name__ == "__main__":
    main()
