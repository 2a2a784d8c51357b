"""Resampling schemes (inference/smc/resampling.py): unbiased offspring
counts (E[copies of i] = num_samples * w_i, within 5 standard errors over
independent resamplings run in one jit(vmap)), lower variance than multinomial,
the exact properties each scheme has by construction, zero weights never
chosen, and the weight summaries."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.inference.smc.resampling import (
    RESAMPLERS, effective_sample_size, normalized_weights, resampler, systematic_counting, systematic_search,
)

# systematic is one of its two forms by size: each is tested on its own
FORMS = {**RESAMPLERS, "systematic_search": systematic_search, "systematic_counting": systematic_counting}
SCHEMES = list(FORMS)
LOWER_VARIANCE = ["systematic_search", "systematic_counting", "stratified", "residual"]

# Asymmetric, with one zero weight and one dominant particle; num_samples * w_i
# is an integer only at the zero weight for num_samples 7 and 12, so that is
# the only count the theory makes deterministic (always 0, checked exactly).
WEIGHTS = np.array([0.02, 0.0, 0.55, 0.13, 0.07, 0.2, 0.03])
N = WEIGHTS.size
REPEATS = 2000
K = 5.0  # standard errors


def log_weights(dtype=jnp.float32):
    """Unnormalised (shifted) log weights of WEIGHTS, -inf at the zero."""
    with np.errstate(divide="ignore"):
        return jnp.asarray(np.log(WEIGHTS) - 3.7, dtype)


@functools.lru_cache(maxsize=None)
def every_scheme(num_samples):
    """All four schemes in one program (one compilation), jitted and vmapped
    over keys, the log weights shared: {name: (keys, num_samples) ancestors}."""
    schemes = lambda key, lw: {name: fn(key, lw, num_samples) for name, fn in FORMS.items()}
    return jax.jit(jax.vmap(schemes, in_axes=(0, None)))


COPIES = np.array([3, 0, 1, 5, 2, 0, 1])  # weights COPIES / 12: deterministic for residual and systematic
MANY = 100_000
ZERO = (np.arange(MANY) % 3 == 0) | (np.arange(MANY) >= MANY - 5)
CASES = {  # name -> (log weights of a dtype, seed, number of keys)
    "asymmetric": (log_weights, 7, REPEATS),
    "equal": (lambda dtype: jnp.full(N, 2.5, dtype), 1, REPEATS),
    "single": (lambda dtype: jnp.full(N, -jnp.inf, dtype).at[4].set(40.0), 8, REPEATS),
    "multiples": (lambda dtype: jnp.log(jnp.asarray(COPIES / COPIES.sum(), dtype)), 2, REPEATS),
    "zeros": (lambda dtype: jnp.asarray(np.where(ZERO, -np.inf, 7.0 * np.random.default_rng(3).standard_normal(MANY)), dtype), 4, 8),
}


@functools.lru_cache(maxsize=None)
def resampled(case, num_samples=None, dtype=jnp.float32):
    """{name: ancestors} for CASES[case], each a NumPy (keys, num_samples) array."""
    make, seed, count = CASES[case]
    lw = make(dtype)
    ancestors = every_scheme(num_samples)(jax.random.split(jax.random.key(seed), count), lw)
    for a in ancestors.values():
        assert a.dtype == jnp.int32 and a.shape == (count, num_samples or lw.shape[0])
    return {name: np.asarray(a) for name, a in ancestors.items()}


@functools.lru_cache(maxsize=None)
def offspring_counts(name, num_samples, dtype=jnp.float32):
    """(REPEATS, N) offspring counts of independent resamplings of WEIGHTS."""
    ancestors = resampled("asymmetric", num_samples, dtype)[name]
    assert ancestors.min() >= 0 and ancestors.max() < N
    return (ancestors[:, :, None] == np.arange(N)).sum(axis=1)


def assert_unbiased(counts, num_samples):
    expected = num_samples * WEIGHTS / WEIGHTS.sum()
    assert (counts.sum(axis=1) == num_samples).all()
    deterministic = WEIGHTS == 0
    np.testing.assert_array_equal(counts[:, deterministic], 0, err_msg="a particle of weight zero was chosen")
    mean, se = counts.mean(axis=0), counts.std(axis=0, ddof=1) / np.sqrt(REPEATS)
    random = ~deterministic
    assert (se[random] > 0).all(), se  # the theory says these counts vary
    z = (mean - expected)[random] / se[random]
    assert np.all(np.abs(z) < K), z


@pytest.mark.parametrize("num_samples", [N, 12])
@pytest.mark.parametrize("name", SCHEMES)
def test_expected_offspring_is_num_samples_times_weight(name, num_samples):
    assert_unbiased(offspring_counts(name, num_samples), num_samples)


def test_lower_variance_than_multinomial():
    """Per particle, the offspring variance is at most multinomial's exact
    ``M w (1 - w)`` (within 5 standard errors of the sample variance), and
    in total it is lower by more than 5 standard errors."""
    w = WEIGHTS / WEIGHTS.sum()
    multinomial_variance = N * w * (1 - w)
    counts = offspring_counts("multinomial", N)
    squares = (counts - counts.mean(0)) ** 2
    np.testing.assert_array_less(np.abs(squares.mean(0) - multinomial_variance), K * squares.std(0) / np.sqrt(REPEATS) + 1e-12)
    for name in LOWER_VARIANCE:
        counts = offspring_counts(name, N)
        squares = (counts - counts.mean(0)) ** 2
        variance, se = squares.mean(0), squares.std(0) / np.sqrt(REPEATS)
        assert np.all(variance <= multinomial_variance + K * se), (name, variance, multinomial_variance)
        total_se = squares.sum(1).std() / np.sqrt(REPEATS)
        assert variance.sum() + K * total_se < multinomial_variance.sum(), (name, variance.sum(), total_se)


SORTED = ["systematic", "systematic_search", "systematic_counting", "stratified"]


@pytest.mark.parametrize("name", SORTED)
def test_equal_weights_give_every_particle_once(name):
    np.testing.assert_array_equal(resampled("equal", N)[name], np.broadcast_to(np.arange(N), (REPEATS, N)))


@pytest.mark.parametrize("name", ["residual", "systematic_search", "systematic_counting"])
def test_multiples_of_one_over_num_samples_are_deterministic(name):
    ancestors = resampled("multiples", int(COPIES.sum()))[name]
    expected = np.repeat(np.arange(N), COPIES)
    np.testing.assert_array_equal(np.sort(ancestors, axis=1), np.broadcast_to(expected, ancestors.shape))


@pytest.mark.parametrize("name", SCHEMES)
def test_zero_weights_are_never_chosen(name):
    """Every third particle, and the first and the last five, have weight
    zero, among log weights ~ N(0, 7^2). (XLA's blocked cumulative sum moves
    at hundreds of these zeros: a plain cumsum + searchsorted picks some.)"""
    ancestors = resampled("zeros")[name]
    assert ancestors.min() >= 0 and ancestors.max() < MANY
    assert not ZERO[ancestors].any()


@pytest.mark.parametrize("name", SCHEMES)
def test_fewer_samples_than_particles_from_half_precision_weights(name):
    ancestors = resampled("asymmetric", 3, jnp.bfloat16)[name]  # computed in the default float inside
    assert ancestors.min() >= 0 and ancestors.max() < N and not (ancestors == 1).any()
    if name in SORTED:
        assert (np.diff(ancestors) >= 0).all()


@pytest.mark.parametrize("name", SCHEMES)
def test_a_single_particle_of_positive_weight_takes_every_slot(name):
    np.testing.assert_array_equal(resampled("single", 12)[name], np.full((REPEATS, 12), 4))


def test_vmap_over_log_weights_and_keys_matches_one_at_a_time():
    lws = jnp.stack([CASES["asymmetric"][0](jnp.float32), CASES["equal"][0](jnp.float32)])
    first_keys = jnp.stack([jax.random.split(jax.random.key(CASES[case][1]), REPEATS)[0] for case in ("asymmetric", "equal")])
    schemes = lambda key, lw: {name: fn(key, lw) for name, fn in FORMS.items()}
    both = jax.jit(jax.vmap(schemes))(first_keys, lws)
    for name in SCHEMES:
        np.testing.assert_array_equal(both[name], [resampled("asymmetric", N)[name][0], resampled("equal", N)[name][0]])


def test_resampler_names_and_errors():
    assert all(resampler(name) is RESAMPLERS[name] for name in RESAMPLERS)
    with pytest.raises(ValueError, match="'foo'.*'multinomial', 'systematic', 'stratified', 'residual'"):
        resampler("foo")
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        RESAMPLERS["systematic"](jax.random.key(0), jnp.zeros(3), 0)
    with pytest.raises(ValueError, match=r"shape \(particles,\)"):
        RESAMPLERS["systematic"](jax.random.key(0), jnp.zeros((2, 3)))


def test_effective_sample_size_and_normalized_weights():
    lw = jnp.array([1000.0, 999.0, -jnp.inf, 998.5])  # exp overflows without the shift
    w = np.exp(np.array([0.0, -1.0, -np.inf, -1.5]))
    w /= w.sum()
    np.testing.assert_allclose(normalized_weights(lw), w, rtol=1e-6)
    np.testing.assert_allclose(effective_sample_size(lw), 1.0 / np.sum(w**2), rtol=1e-6)
    ess = jax.jit(jax.vmap(effective_sample_size))(jnp.stack([jnp.zeros(5), jnp.array([0.0] + [-jnp.inf] * 4)]))
    np.testing.assert_allclose(ess, [5.0, 1.0], rtol=1e-6)
