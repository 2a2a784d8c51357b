"""(F) Effective samples per gradient evaluation of NUTS under the three
metric adaptations (``adaptation="stan" | "fisher_diag" | "low_rank"``), on a
strongly correlated Gaussian and a logistic regression with collinear
predictors. ESS per gradient does not depend on the machine's load."""

import time

import jax
import jax.numpy as jnp
import numpy as np

import ppl
from ppl import dist
from ppl.inference import diagnostics, mcmc

__all__ = ["run", "ADAPTATIONS"]

ADAPTATIONS = ("stan", "fisher_diag", "low_rank")
DIMENSION, CORRELATION = 20, 0.95
SCALES = jnp.linspace(0.1, 10.0, DIMENSION)
COVARIANCE = (CORRELATION * jnp.ones((DIMENSION, DIMENSION)) + (1 - CORRELATION) * jnp.eye(DIMENSION)) * jnp.outer(SCALES, SCALES)


@ppl.gen
def correlated_gaussian():
    ppl.sample("x", dist.MultivariateNormal(jnp.zeros(DIMENSION), COVARIANCE))


@ppl.gen
def collinear_logistic(features):
    weights = ppl.sample("weights", dist.Normal(0.0, 1.0).expand([features.shape[1]]))
    bias = ppl.sample("bias", dist.Normal(0.0, 1.0))
    ppl.sample("y", dist.Bernoulli(logits=features @ weights + bias))


def _collinear_data(rows=500, columns=10, correlation=0.95):
    rng = np.random.default_rng(0)
    mixing = np.linalg.cholesky(correlation * np.ones((columns, columns)) + (1 - correlation) * np.eye(columns))
    features = rng.standard_normal((rows, columns)) @ mixing.T
    logits = features @ rng.normal(0.0, 0.5, columns) + 0.3
    return jnp.asarray(features, jnp.float32), jnp.asarray(rng.random(rows) < 1 / (1 + np.exp(-logits)), jnp.float32)


def _models():
    features, ys = _collinear_data()
    return {
        f"correlated Gaussian (d={DIMENSION}, rho={CORRELATION}, scales 0.1-10)": (correlated_gaussian, (), {}),
        "logistic regression, 500 x 10 collinear predictors (rho=0.95)": (collinear_logistic, (features,), {"y": ys}),
    }


def _measure(model, args, observations, adaptation, num_warmup, num_samples):
    start = time.perf_counter()
    result = mcmc.nuts(jax.random.key(0), model, args, observations, num_warmup=num_warmup, num_samples=num_samples,
                       num_chains=4, adaptation=adaptation, progress=False)
    seconds = time.perf_counter() - start
    leaves = [leaf.reshape(leaf.shape[:2] + (-1,)) for leaf in jax.tree.leaves(result.samples)]
    ess = np.asarray(diagnostics.ess_bulk(jnp.concatenate(leaves, axis=-1)))
    gradients = int(result.stats["n_steps"].sum())
    return dict(min_ess=float(ess.min()), median_ess=float(np.median(ess)), gradients=gradients,
                divergences=int(result.stats["diverging"].sum()), seconds=seconds)


def run(num_warmup=1000, num_samples=1000):
    """The markdown table and the figures ``{(model, adaptation): dict}``."""
    figures = {}
    lines = [
        "| target | adaptation | min bulk ESS | median bulk ESS | gradient evaluations (sampling, 4 chains) "
        "| min ESS per 1000 gradients | × stan | divergences | seconds (first call, compile included) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (model, args, observations) in _models().items():
        for adaptation in ADAPTATIONS:
            figures[name, adaptation] = f = _measure(model, args, observations, adaptation, num_warmup, num_samples)
            f["per_gradient"] = f["min_ess"] / f["gradients"]
            ratio = f["per_gradient"] / figures[name, "stan"]["per_gradient"]
            lines.append(
                f"| {name} | {adaptation} | {f['min_ess']:.0f} | {f['median_ess']:.0f} | {f['gradients']:,} | "
                f"{1000 * f['per_gradient']:.2f} | {ratio:.2f} | {f['divergences']} | {f['seconds']:.1f} |"
            )
            print(lines[-1], flush=True)
    return lines, figures
