"""The MCMC examples, at reduced sizes: examples/eight_schools.py (the centred
parameterisation diverges and mixes badly in tau, the non-centred one does
not) and examples/hierarchical_logistic.py (pointwise log likelihood, a
finite LOO estimate, the true values recovered). Each runs its example's
``main`` once (one compilation per model), printing and plotting included.

Why the eight-schools checks cannot flake. The seeds are fixed and the run is
deterministic on a given platform, so a pass is a pass every time; what is
left is whether another platform's rounding (another CPU, another XLA), which
sends the chains down another path, amounts to an unlucky seed. At these sizes
(8 chains of 300 warmup + 500 draws) over 25 seeds: the centred model had 36
to 212 divergences and a bulk ESS of tau of 37 to 270, and visited log tau <
-1.5 in at most 1.4% of its draws (none in 22 of the 25 runs); the
non-centred model had 0 to 3 divergences, a bulk ESS of tau of 1734 to 2652,
and 3.6% to 5.3% of its draws below log tau = -1.5. Every threshold below
sits well outside both ranges; the pooled draws of 8 chains make the counts
far less variable than one chain's.
"""

import contextlib
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


eight_schools = load("eight_schools")
hierarchical_logistic = load("hierarchical_logistic")

PNG = b"\x89PNG\r\n\x1a\n"
# ArviZ 0.23's matplotlib backend calls an API that matplotlib 3.11 deprecates, once per artist.
pytestmark = pytest.mark.filterwarnings("ignore:Passing a dict or None as alias_mapping:DeprecationWarning")


def run_printing(fn, **kwargs):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        value = fn(**kwargs)
    return value, printed.getvalue()


def assert_pngs(paths):
    for path in paths:
        assert Path(path).read_bytes()[:8] == PNG, path


# ----- eight schools ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def schools(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("eight_schools")
    results, printed = run_printing(eight_schools.main, num_warmup=300, num_samples=500, num_chains=8, seed=0,
                                    output_dir=output_dir, progress=False)  # fmt: skip
    return results, printed, output_dir


def test_noncentred_has_far_fewer_divergences(schools):
    results, _, _ = schools
    centred, noncentred = (eight_schools.divergences(results[name]) for name in ("centred", "non-centred"))
    assert centred >= 20, centred
    assert noncentred <= 10 and noncentred <= centred / 5, (centred, noncentred)


def test_tau_mixes_badly_only_when_centred(schools):
    results, _, _ = schools
    centred, noncentred = (eight_schools.ess_bulk_tau(results[name]) for name in ("centred", "non-centred"))
    assert centred < 600 < 1200 < noncentred, (centred, noncentred)  # of 4000 draws


def test_centred_chains_miss_the_neck_of_the_funnel(schools):
    """Small tau is where the centred sampler diverges: its chains rarely get
    there, so its draws under-represent small tau; the non-centred ones do not."""
    results, _, _ = schools
    below = {name: float(np.mean(np.log(results[name].samples["tau"]) < -1.5)) for name in results}
    assert below["non-centred"] > 0.02, below
    assert below["centred"] < below["non-centred"] / 2, below


def test_noncentred_theta_is_the_derived_quantity(schools):
    results, _, _ = schools
    result = results["non-centred"]
    mu, tau = (np.asarray(result.samples[name])[..., None] for name in ("mu", "tau"))
    expected = mu + tau * np.asarray(result.samples["schools"]["theta_tilde"])
    assert result.retvals.shape == (8, 500, 8)
    np.testing.assert_allclose(result.retvals, expected, rtol=1e-5, atol=1e-5)
    assert results["centred"].retvals is None  # the centred model returns nothing: theta is a choice there


def test_eight_schools_prints_and_plots(schools):
    results, printed, output_dir = schools
    for name, result in results.items():
        assert f"===== {name}: {eight_schools.divergences(result)} divergent transitions" in printed
    assert printed.count("8 chains x 500 draws") == 2  # the two summary tables
    assert "retval[7]" in printed and "schools/theta_tilde[0]" in printed and "schools/theta[0]" in printed
    assert printed.count("bulk ESS of tau:") == 2
    assert_pngs(sorted(output_dir.glob("*.png")))
    assert {path.name for path in output_dir.glob("*.png")} == {
        "eight_schools_trace_centred.png", "eight_schools_trace_noncentred.png", "eight_schools_rank.png",
        "eight_schools_funnel.png",
    }  # fmt: skip


# ----- hierarchical logistic regression ------------------------------------------------------

NUM_ROWS = 1000


@pytest.fixture(scope="module")
def logistic(tmp_path_factory):
    plot_path = tmp_path_factory.mktemp("hierarchical_logistic") / "hierarchical_logistic.png"
    value, printed = run_printing(hierarchical_logistic.main, num_rows=NUM_ROWS, num_warmup=300, num_samples=300,
                                  num_chains=2, plot_path=plot_path, progress=False)  # fmt: skip
    return value, printed, plot_path


def test_log_likelihood_is_pointwise(logistic):
    (_, idata, _, _), _, _ = logistic
    assert idata.log_likelihood["rows/y"].shape == (2, 300, NUM_ROWS)


def test_loo_is_finite_and_beats_a_coin(logistic):
    (_, _, loo, _), _, _ = logistic
    assert np.isfinite(loo.elpd_loo) and np.isfinite(loo.se)
    assert loo.loo_i.shape == (NUM_ROWS,)
    assert float(np.max(loo.pareto_k)) < 0.7  # PSIS is reliable for every row
    # The slopes carry real signal: far better than a fair coin per row (about 170 nats here).
    assert loo.elpd_loo > NUM_ROWS * np.log(0.5) + 10 * loo.se, (loo.elpd_loo, loo.se)


def test_posterior_recovers_the_true_values(logistic):
    """The data were simulated from the model: each true intercept and slope
    lies within 4 posterior standard deviations of the posterior mean (the
    Monte Carlo error of the mean is a small fraction of a posterior sd here)."""
    (result, _, _, truth), _, _ = logistic
    for name in ("intercepts", "slopes"):
        draws = np.asarray(result.samples[name])
        z = (draws.mean(axis=(0, 1)) - truth[name]) / draws.std(axis=(0, 1))
        assert np.all(np.abs(z) < 4), (name, z)


def test_hierarchical_logistic_prints_and_plots(logistic):
    (result, _, _, _), printed, plot_path = logistic
    assert "2 chains x 300 draws" in printed and "intercepts[11]" in printed
    assert "elpd_loo" in printed and "true values:" in printed
    assert f"{int(np.sum(result.stats['diverging']))} divergent transitions" in printed
    assert_pngs([plot_path])
