"""The discrete-latents example (examples/discrete_latents.py): its four
gradient estimators are unbiased for the closed-form ELBO's gradient, and
their variances are ordered as the example says, at the initial parameters.

Unbiasedness: the summed squared error of the mean gradient over its
expected size (seeds fixed). The variance gaps asserted are orders of
magnitude wide, far beyond the sampling error of a variance over 256 keys.
(``main`` itself is not run here: compiling four training loops takes
longer than a unit test should.)
"""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest

NUM_KEYS = 256

_path = Path(__file__).resolve().parents[1] / "examples" / "discrete_latents.py"
_spec = importlib.util.spec_from_file_location("discrete_latents", _path)
discrete_latents = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(discrete_latents)


@pytest.fixture(scope="module")
def xs():
    return discrete_latents.simulate_data(jax.random.key(discrete_latents.DATA_SEED))


@pytest.fixture(scope="module")
def logits_gradients(xs):
    """Each estimator's logits gradients over NUM_KEYS keys, at the initial
    parameters (nudged so that the guide is not uniform)."""
    params = discrete_latents.initial_params()
    params["logits"] = jax.random.normal(jax.random.key(3), params["logits"].shape)
    keys = jax.random.split(jax.random.key(4), NUM_KEYS)
    observations = {"points": {"x": xs}}

    def logits_gradient(strategy):
        target = discrete_latents.objective(strategy)
        return jax.jit(jax.vmap(lambda key: target.grad_estimate(key, params, observations)["logits"]))

    gradients = {name: np.asarray(logits_gradient(s)(keys)) for name, s in discrete_latents.ESTIMATORS.items()}
    exact = np.asarray(jax.grad(discrete_latents.exact_elbo)(params, xs)["logits"])
    return gradients, exact


@pytest.mark.parametrize("name", list(discrete_latents.ESTIMATORS))
def test_estimators_are_unbiased_for_the_closed_form_gradient(logits_gradients, name):
    gradients, exact = logits_gradients
    samples = gradients[name]
    # The squared error of the mean, summed over the 600 coordinates, over
    # its expectation for an unbiased estimator (the summed variance of the
    # mean): about 1 (0.97 to 1.09 over seeds for every estimator). For
    # power: a mean-zero estimator with enumeration's variance scores ~490.
    # Summed rather than per coordinate: a coordinate whose rare value no
    # key drew has a sample variance of zero. Plain REINFORCE's variance is
    # so large that the check has little power there.
    ratio = np.sum((samples.mean(axis=0) - exact) ** 2) / (np.sum(samples.var(axis=0)) / NUM_KEYS)
    assert ratio < 2.0, ratio


def test_variances_are_ordered(logits_gradients):
    gradients, _ = logits_gradients
    variance = {name: float(samples.var(axis=0).sum()) for name, samples in gradients.items()}
    assert variance["REINFORCE + baseline"] < variance["REINFORCE"] / 10, variance
    assert variance["enumeration"] < variance["REINFORCE + baseline"] / 10, variance
    # For a categorical, MVD's per-value differences are enumeration's terms.
    assert abs(variance["MVD"] - variance["enumeration"]) < 0.05 * variance["enumeration"], variance
