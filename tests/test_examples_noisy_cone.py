"""The noisy-cone example (examples/noisy_cone.py): its bounds are ordered as
theory says, at the same parameters, and lie below the exact log evidence.

Each comparison is between means of independent estimates, with tolerance
K standard errors of the difference (seeds fixed); the gaps asserted are
many standard errors wide, so the checks have power.
"""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.inference import vi

K = 4.5
NUM_SAMPLES = 20_000

_path = Path(__file__).resolve().parents[1] / "examples" / "noisy_cone.py"
_spec = importlib.util.spec_from_file_location("noisy_cone", _path)
noisy_cone = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(noisy_cone)

RING_PARAMS = {"log_scale": jnp.array([-2.5, -2.5])}
NORMAL_PARAMS = {"loc": jnp.array([2.2, 0.0]), "log_scale": jnp.array([-2.4, -0.5])}
HIERARCHICAL = (noisy_cone.cone_model, noisy_cone.ring_family, noisy_cone.LATENTS, noisy_cone.angle_reverse_model)


def estimate(objective, params, seed):
    return noisy_cone.evaluate(objective, params, jax.random.key(seed), NUM_SAMPLES)


def assert_above(higher, lower, min_gap=0.0):
    """``higher`` exceeds ``lower`` (both (mean, standard error)) by more than
    ``min_gap`` within K standard errors of the difference."""
    gap, standard_error = higher[0] - lower[0], float(np.hypot(higher[1], lower[1]))
    assert gap > min_gap - K * standard_error, (higher, lower)


@pytest.fixture(scope="module")
def evidence():
    return noisy_cone.log_evidence()


def test_log_evidence_matches_a_direct_quadrature(evidence):
    squared_radius = np.linspace(0.0, 100.0, 400_001)
    noise = 0.1 + squared_radius / 100.0
    integrand = np.exp(-squared_radius / 200.0) / 200.0 * np.exp(-0.5 * ((5.0 - squared_radius) / noise) ** 2)
    direct = np.log(np.trapezoid(integrand / (np.sqrt(2 * np.pi) * noise), squared_radius))
    assert abs(evidence - direct) < 1e-4


def test_hierarchical_bounds_are_ordered_at_the_same_parameters(evidence):
    hvi = estimate(vi.hvi(*HIERARCHICAL), RING_PARAMS, 1)
    iwhvi = estimate(vi.iwhvi(*HIERARCHICAL, num_particles=5), RING_PARAMS, 2)
    diwhvi = estimate(vi.diwhvi(*HIERARCHICAL, num_particles=5, num_inner=5), RING_PARAMS, 3)
    # More particles for the density estimate, then for the outer bound: each
    # tightens the bound in expectation (here by about a nat each).
    assert_above(iwhvi, hvi, min_gap=0.5)
    assert_above(diwhvi, iwhvi, min_gap=0.5)
    assert_above((evidence, 0.0), diwhvi)


def test_iwelbo_is_above_the_elbo_and_below_the_evidence(evidence):
    elbo = estimate(vi.elbo(noisy_cone.cone_model, noisy_cone.normal_family), NORMAL_PARAMS, 4)
    iwelbo = estimate(vi.iwelbo(noisy_cone.cone_model, noisy_cone.normal_family, 5), NORMAL_PARAMS, 5)
    assert_above(iwelbo, elbo, min_gap=0.1)
    assert_above((evidence, 0.0), iwelbo)

