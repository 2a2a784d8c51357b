"""Diagnostics against ArviZ (the reference: same conventions, same edge
cases), summaries (names, columns, warnings, formatting), and the summaries
of importance sampling (hand-computed weighted moments) and of variational
families. Float32 here, at float32 tolerances; ``x64_diagnostics_checks.py``
repeats the ArviZ comparisons in float64 at 1e-6 (run by ``test_x64.py``)."""

import warnings

import arviz
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
from ppl import dist
from ppl.inference import diagnostics, vi

FUNCTIONS = {
    "rhat": (diagnostics.rhat, lambda x: arviz.rhat(x, method="rank")),
    "ess_bulk": (diagnostics.ess_bulk, lambda x: arviz.ess(x, method="bulk")),
    "ess_tail": (diagnostics.ess_tail, lambda x: arviz.ess(x, method="tail")),
    "ess_mean": (diagnostics.ess_mean, lambda x: arviz.ess(x, method="mean")),
    "mcse_mean": (diagnostics.mcse_mean, lambda x: arviz.mcse(x, method="mean")),
    "mcse_sd": (diagnostics.mcse_sd, lambda x: arviz.mcse(x, method="sd")),
}
RTOL_32 = 1e-4


# ----- test arrays (NumPy float64; the float32 tests round them once) ----------


def autoregressive(rng, shape, phi):
    """AR(1) chains along axis 1, started from the stationary distribution."""
    noise = rng.normal(size=shape) * np.sqrt(1 - phi**2)
    x = np.empty(shape)
    x[:, 0] = rng.normal(size=(shape[0],) + shape[2:])
    for t in range(1, shape[1]):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    return x


def columns(seed=0, chains=4, draws=500):
    """(chains, draws, case): one column per case, so each function compiles once."""
    rng = np.random.default_rng(seed)
    shape = (chains, draws)
    shifted = rng.normal(size=shape)
    shifted[-1] += 2.0  # one chain elsewhere: a large R-hat
    with_nan = rng.normal(size=shape)
    with_nan[1, 10] = np.nan
    cases = {
        "iid normal": rng.normal(size=shape),
        "AR(1), phi 0.95": autoregressive(rng, shape, 0.95),
        "heavy tails (Cauchy)": rng.standard_cauchy(size=shape),
        "shifted chain": shifted,
        "integers (ties in the ranks)": np.round(2 * rng.normal(size=shape)),
        "constant": np.full(shape, 1.5),
        "NaN draw": with_nan,
        "log-normal": np.exp(rng.normal(size=shape)),
    }
    return list(cases), np.stack(list(cases.values()), axis=-1)


def one_chain(seed=1):
    return autoregressive(np.random.default_rng(seed), (1, 501, 3), 0.6)  # odd: split drops the middle draw


def event_shaped(seed=2):
    rng = np.random.default_rng(seed)
    x = autoregressive(rng, (4, 500, 2, 4), 0.8)
    x[:, :, 0, 1] += np.array([0.0, 0.0, 0.0, 1.0])[:, None]
    return x


def arviz_reference(reference, x):
    """ArviZ on each scalar's (chains, draws) array, in float64."""
    x = np.asarray(x, np.float64)
    out = np.empty(x.shape[2:])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for index in np.ndindex(*x.shape[2:]):
            out[index] = reference(x[(slice(None), slice(None)) + index])
    return out


def compare(x, rtol, functions=FUNCTIONS):
    # Each function compiles once per (chains, draws, scalars): the tests share shapes (4, 500, 8) and (1, 501, 3).
    computed = {name: fn(x) for name, (fn, _) in functions.items()}
    for name, (_, reference) in functions.items():
        expected = arviz_reference(reference, x)
        assert computed[name].shape == expected.shape, name
        assert computed[name].dtype == x.dtype, name
        np.testing.assert_allclose(np.asarray(computed[name]), expected, rtol=rtol, atol=0, equal_nan=True, err_msg=name)


# ----- the functions against ArviZ ----------------------------------------------


def test_every_function_matches_arviz_on_every_case():
    names, x = columns()
    x = jnp.asarray(x, jnp.float32)
    # mcse_sd of the constant column is 0 / 0 = NaN in both; the check below covers it.
    compare(x, RTOL_32)


def test_the_cases_are_what_they_claim():
    """So that the comparison above covers large R-hats, small ESS and NaNs."""
    names, x = columns()
    r_hat, ess = np.asarray(diagnostics.rhat(x)), np.asarray(diagnostics.ess_bulk(x))
    case = dict(zip(names, range(len(names))))
    assert r_hat[case["shifted chain"]] > 1.2 and abs(r_hat[case["iid normal"]] - 1) < 0.01
    assert ess[case["AR(1), phi 0.95"]] < 200 < ess[case["iid normal"]]
    assert np.isnan(r_hat[case["constant"]]) and ess[case["constant"]] == x.shape[0] * x.shape[1]
    assert np.isnan(r_hat[case["NaN draw"]]) and np.isnan(ess[case["NaN draw"]])


def test_one_chain_matches_arviz_and_has_no_rhat():
    x = jnp.asarray(one_chain(), jnp.float32)
    compare(x, RTOL_32)
    assert np.all(np.isnan(diagnostics.rhat(x)))  # ArviZ: R-hat needs 2 chains
    assert np.all(np.isfinite(diagnostics.ess_bulk(x)))


def test_event_shapes_are_kept():
    x = jnp.asarray(event_shaped(), jnp.float32)
    compare(x, RTOL_32)
    assert diagnostics.rhat(x).shape == (2, 4)
    assert diagnostics.rhat(x)[0, 1] > 1.1 and jax.jit(diagnostics.rhat)(x).shape == (2, 4)


def test_too_few_draws_give_nan_and_a_bare_vector_is_refused():
    x = jnp.ones((2, 3, 2))
    for fn, _ in FUNCTIONS.values():
        assert np.all(np.isnan(fn(x))) and fn(x).shape == (2,)
    with pytest.raises(ValueError, match="chains, draws"):
        diagnostics.rhat(jnp.ones(100))


def test_integer_and_boolean_draws_are_accepted():
    x = np.random.default_rng(3).poisson(3.0, size=(4, 500, 8))
    np.testing.assert_allclose(diagnostics.ess_bulk(x), arviz_reference(arviz.ess, x), rtol=RTOL_32)
    assert diagnostics.ess_tail(x > 3).dtype == jnp.result_type(float)


# ----- summary ----------------------------------------------------------------------


def choice_map(seed=4):
    rng = np.random.default_rng(seed)
    return {
        "mu": rng.normal(size=(4, 500)),
        "coeffs": 1.0 + rng.normal(size=(4, 500, 2, 2)),
        "ys": {"y": rng.normal(size=(4, 500, 3))},
    }


def test_summary_names_and_columns_match_arviz():
    draws = choice_map()
    s = diagnostics.summary(draws)
    assert s.names == ["mu", "coeffs[0, 0]", "coeffs[0, 1]", "coeffs[1, 0]", "coeffs[1, 1]", "ys/y[0]", "ys/y[1]", "ys/y[2]"]
    assert list(s.table) == ["mean", "sd", "5%", "50%", "95%", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]
    data = {"mu": draws["mu"], "coeffs": draws["coeffs"], "ys/y": draws["ys"]["y"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = arviz.summary(arviz.convert_to_dataset(data), round_to="none")
    for column in ["mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]:
        np.testing.assert_allclose(s.table[column], reference.loc[s.names, column].to_numpy(), rtol=RTOL_32, err_msg=column)
    flat = np.concatenate([a.reshape(4, 500, -1) for a in data.values()], axis=-1).reshape(2000, -1)
    np.testing.assert_allclose(s.table["5%"], np.quantile(flat, 0.05, axis=0), rtol=RTOL_32)
    assert s.warnings == [] and s.num_divergences is None


def test_summary_of_a_single_array_and_its_text():
    s = diagnostics.summary(jnp.asarray(event_shaped()))
    assert s.names[:2] == ["x[0, 0]", "x[0, 1]"] and s.names[-1] == "x[1, 3]"
    text = str(s)
    assert text == repr(s)
    header, columns_line, *rows = text.splitlines()
    assert header == "4 chains x 500 draws"
    assert columns_line.split() == list(s.table)
    rows, warning_lines = rows[:8], rows[8:]
    assert {len(line) for line in rows + [columns_line]} == {len(columns_line)}  # aligned
    assert warning_lines == [f"warning: {w}" for w in s.warnings] and len(s.warnings) == 3  # x[0, 1]: r_hat, ess
    assert rows[0].split()[0] == "x[0,"  # the name, then the numbers
    assert "<table>" in s._repr_html_() and "x[1, 3]" in s._repr_html_()


def test_summary_warns_of_divergences_bad_rhat_low_ess_and_saturated_trees():
    draws = choice_map()
    draws["mu"] = draws["mu"] + np.array([0.0, 0.0, 0.0, 3.0])[:, None]  # planted: one chain elsewhere
    draws["ys"]["y"][..., 1] = autoregressive(np.random.default_rng(5), (4, 500), 0.995)  # planted: low ESS
    diverging = np.zeros((4, 500), bool)
    diverging[0, [3, 100]] = diverging[2, 7] = True
    tree_depth = np.full((4, 500), 4)
    tree_depth[1, :5] = 10
    s = diagnostics.summary(draws, stats={"diverging": diverging, "tree_depth": tree_depth, "energy": np.zeros((4, 500))},
                            max_tree_depth=10)
    assert s.num_divergences == 3
    text = "\n".join(s.warnings)
    assert "3 divergent transitions (0.15% of 2000 draws)" in text
    assert "tree depth reached max_tree_depth=10 in 5 of 2000 draws (0.25%)" in text
    r_hat = [w for w in s.warnings if w.startswith("r_hat above 1.01")]
    assert len(r_hat) == 1 and r_hat[0].endswith(": mu, ys/y[1]") and "2 of 8 scalars" in r_hat[0]
    assert any(w.startswith("ess_bulk below 100 per chain (400 for 4 chains)") and w.endswith(": mu, ys/y[1]") for w in s.warnings)
    assert str(s).splitlines()[-len(s.warnings) :] == [f"warning: {w}" for w in s.warnings]
    clean = diagnostics.summary(choice_map(), stats={"diverging": np.zeros((4, 500), bool), "tree_depth": tree_depth * 0},
                                max_tree_depth=10)
    assert clean.num_divergences == 0 and clean.warnings == []


def test_summary_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="'b' has shape"):
        diagnostics.summary({"a": np.zeros((4, 100)), "b": np.zeros((4, 99))})
    with pytest.raises(ValueError, match="stats\\['diverging'\\]"):
        diagnostics.summary({"a": np.zeros((4, 100))}, stats={"diverging": np.zeros(400, bool)})
    with pytest.raises(ValueError, match="tree_depth"):
        diagnostics.summary({"a": np.zeros((4, 100))}, max_tree_depth=10)


def test_weighted_summary_closed_form():
    x = jnp.array([0.0, 1.0, 2.0, 3.0])
    s = diagnostics.summary({"a": x}, log_weights=jnp.log(jnp.array([1.0, 2.0, 3.0, 4.0])))
    # w = (.1, .2, .3, .4): mean 2, variance .4 + .2 + 0 + .4 = 1, cumulative weights .1 .3 .6 1
    expected = {"mean": 2.0, "sd": 1.0, "5%": 0.0, "50%": 2.0, "95%": 3.0,
                "mcse_mean": np.sqrt(0.01 * 4 + 0.04 + 0.16), "ess": 1 / 0.3}
    assert list(s.table) == list(expected)
    for column, value in expected.items():
        np.testing.assert_allclose(s.table[column], [value], rtol=1e-6, err_msg=column)
    assert s.warnings == ["Kish effective sample size 3.3 of 4 weighted draws is below 100"]


# ----- importance sampling ------------------------------------------------------------


@ppl.gen
def regression(xs):
    coeffs = ppl.sample("coeffs", dist.Normal(0.0, 1.0).expand([2]))
    noise = ppl.sample("noise", dist.HalfNormal(1.0))
    return ppl.sample("ys", dist.Normal(coeffs[0] + coeffs[1] * xs, noise))


XS = jnp.linspace(-1.0, 1.0, 5)


@pytest.fixture(scope="module")
def weighted():
    return ppl.inference.importance(jax.random.key(0), regression, (XS,), {"ys": 0.3 - 0.5 * XS}, 4000)


def test_importance_summary_is_the_weighted_moments_of_the_latents(weighted):
    result = weighted
    s = result.summary()
    assert s.names == ["coeffs[0]", "coeffs[1]", "noise"]  # not the observed ys
    latents = result.latent_choices
    values = np.concatenate([np.asarray(latents["coeffs"]), np.asarray(latents["noise"])[:, None]], axis=1).astype(np.float64)
    w = np.exp(np.asarray(result.log_weights, np.float64) - np.max(result.log_weights))
    w /= w.sum()
    mean = w @ values
    np.testing.assert_allclose(s.table["mean"], mean, rtol=1e-4)
    np.testing.assert_allclose(s.table["sd"], np.sqrt(w @ (values - mean) ** 2), rtol=1e-4)
    np.testing.assert_allclose(s.table["mcse_mean"], np.sqrt(w**2 @ (values - mean) ** 2), rtol=1e-4)
    np.testing.assert_allclose(s.table["ess"], 1 / np.sum(w**2), rtol=1e-4)
    np.testing.assert_allclose(s.table["ess"][0], result.ess, rtol=1e-4)
    for level in (0.05, 0.5, 0.95):
        order = np.argsort(values, axis=0)
        cumulative = np.cumsum(w[order], axis=0)
        first = np.array([np.searchsorted(cumulative[:, j], level) for j in range(3)])
        np.testing.assert_allclose(s.table[f"{level:.0%}"], values[order[first, range(3)], range(3)], rtol=1e-6)


def test_importance_repr_names_particles_ess_and_latents(weighted):
    result = weighted
    text = repr(result)
    assert text.startswith(f"ImportanceResult(4000 particles, ESS {float(result.ess):.4g}, ")
    assert f"log marginal likelihood estimate {float(result.log_marginal_likelihood):.6g}" in text
    assert text.endswith("latent choices: coeffs float32[2], noise float32[])")
    assert result.observed == (("ys",),)
    leaves, treedef = jax.tree.flatten(result)  # still a pytree, observed addresses included
    assert jax.tree.unflatten(treedef, leaves).observed == result.observed


# ----- variational families ---------------------------------------------------------------


@ppl.gen
def two_latents(params):
    scale = ppl.sample("scale", dist.HalfNormal(1.0))
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0).expand([2]))
    ppl.sample("y", dist.Normal(mu.sum(), scale))


@pytest.mark.parametrize("family", [vi.mean_field, vi.full_rank])
def test_family_sample_and_summary(family):
    guide = family(two_latents, (None,), {"y": 1.0})
    params = guide.init_params(init_scale=0.5)
    params["guide"]["loc"] = jnp.array([0.0, 2.0, -1.0])  # log scale, mu[0], mu[1]
    n = 501  # the one-chain test's shape: compiled once
    draws = guide.sample(jax.random.key(0), params, n)
    assert list(draws) == ["scale", "mu"] and draws["scale"].shape == (n,) and draws["mu"].shape == (n, 2)
    keys = jax.random.split(jax.random.key(0), n)
    by_hand = jax.vmap(lambda k: guide.simulate(k, (params,)).choices)(keys)
    np.testing.assert_array_equal(draws["mu"], by_hand["mu"])
    mu = np.asarray(draws["mu"])
    assert np.all(np.abs(mu.mean(0) - [2.0, -1.0]) < 4.5 * 0.5 / np.sqrt(n))  # sd 0.5: a normal on mu
    s = guide.summary(jax.random.key(0), params, num_draws=n)
    assert s.names == ["scale", "mu[0]", "mu[1]"] and "r_hat" not in s.table
    np.testing.assert_allclose(s.table["mean"][1:], mu.mean(0), rtol=1e-5)
    assert np.all(s.table["ess_bulk"] > 0.7 * n) and s.warnings == []
    assert str(s).startswith(f"{guide!r}: {n} independent draws")
