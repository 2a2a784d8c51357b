"""State-space models with exact answers, for the SMC tests: a linear-Gaussian
model (the Kalman filter) and a discrete HMM (the forward algorithm)."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

import ppl
from ppl import dist

def assert_z_unbiased(log_z_hats, log_z, max_standard_error=0.15):
    """The estimate of Z is unbiased in Z, not in log Z: the mean of
    exp(log Z_hat - log Z) over independent runs is 1 within 4.5 standard
    errors, and that standard error is small enough for the check to have power."""
    ratios = np.exp(np.asarray(log_z_hats, float) - log_z)
    mean, standard_error = ratios.mean(), ratios.std(ddof=1) / np.sqrt(ratios.size)
    assert abs(mean - 1.0) < 4.5 * standard_error + 1e-12, (mean, standard_error)
    assert standard_error < max_standard_error, standard_error


A, Q, R, S0 = 0.9, 0.7, 0.5, 1.0  # x_t = A x_{t-1} + N(0, Q^2); y_t ~ N(x_t, R^2); x0 ~ N(0, S0^2)


@ppl.gen
def lg_step(x, _):
    x = ppl.sample("x", dist.Normal(A * x, Q))
    ppl.sample("y", dist.Normal(x, R))
    return x, None


@ppl.gen
def linear_gaussian(T):
    x0 = ppl.sample("x0", dist.Normal(0.0, S0))
    ppl.sample("y0", dist.Normal(x0, R))
    return ppl.sample("steps", lg_step.scan(T)(x0, None))


def simulated_data(model, T, seed=0):
    """``(y0, ys, observations)`` of a run of ``model(T)``, one of the two below."""
    trace = model.simulate(jax.random.key(seed), (T,))
    y0, ys = trace.choices["y0"], trace.choices["steps"]["y"]
    return y0, ys, {"y0": y0, "steps": {"y": ys}}


def lg_data(T, seed=0):
    return simulated_data(linear_gaussian, T, seed)


def kalman(y0, ys):
    """``(log p(y0, ys), filtering means (T,), filtering variances (T,))`` of the steps."""
    m, p = 0.0, S0**2
    log_z = norm.logpdf(float(y0), m, np.sqrt(p + R**2))
    k = p / (p + R**2)
    m, p = m + k * (float(y0) - m), (1 - k) * p
    means, variances = [], []
    for y in np.asarray(ys, float):
        m, p = A * m, A**2 * p + Q**2
        log_z += norm.logpdf(y, m, np.sqrt(p + R**2))
        k = p / (p + R**2)
        m, p = m + k * (y - m), (1 - k) * p
        means.append(m)
        variances.append(p)
    return log_z, np.array(means), np.array(variances)


# A two-state HMM with Gaussian emissions (an asymmetric transition matrix).
INITIAL = jnp.array([0.7, 0.3])
TRANSITION = jnp.array([[0.85, 0.15], [0.3, 0.7]])
EMISSION_MEANS = jnp.array([-1.0, 1.5])


@ppl.gen
def hmm_step(z, _):
    z = ppl.sample("z", dist.Categorical(probs=TRANSITION[z]))
    ppl.sample("y", dist.Normal(EMISSION_MEANS[z], 1.0))
    return z, None


@ppl.gen
def hmm(T):
    z0 = ppl.sample("z0", dist.Categorical(probs=INITIAL))
    ppl.sample("y0", dist.Normal(EMISSION_MEANS[z0], 1.0))
    return ppl.sample("steps", hmm_step.scan(T)(z0, None))


def hmm_data(T, seed=0):
    return simulated_data(hmm, T, seed)


def forward(y0, ys):
    """log p(y0, ys) by the forward algorithm."""
    emission = lambda y: norm.logpdf(float(y), np.asarray(EMISSION_MEANS), 1.0)
    alpha = np.log(np.asarray(INITIAL)) + emission(y0)
    for y in np.asarray(ys, float):
        alpha = logsumexp(alpha[:, None] + np.log(np.asarray(TRANSITION)), axis=0) + emission(y)
    return logsumexp(alpha)


def lg_posterior(y0, ys):
    """Exact mean (T + 1,) and covariance of (x0, x_1 .. x_T) given y0, ys in the
    linear-Gaussian model (all of x and y are jointly Gaussian: condition by linear algebra)."""
    T = len(ys)
    # x = L e with x_0 = S0 e_0, x_t = A x_{t-1} + Q e_t; y = x + R noise (y_0 .. y_T)
    lower = np.zeros((T + 1, T + 1))
    for t in range(T + 1):
        for s in range(t + 1):
            lower[t, s] = (S0 if s == 0 else Q) * A ** (t - s)
    cov_x = lower @ lower.T
    cov_y = cov_x + R**2 * np.eye(T + 1)
    y = np.concatenate([[float(y0)], np.asarray(ys, float)])
    gain = np.linalg.solve(cov_y, cov_x)  # (T + 1, T + 1): cov_y^-1 cov_x
    return gain.T @ y, cov_x - cov_x @ gain


def lg_x0_posterior(y0, ys):
    """Exact mean and variance of x0 given y0, ys in the linear-Gaussian model."""
    mean, cov = lg_posterior(y0, ys)
    return float(mean[0]), float(cov[0, 0])


@ppl.gen
def _total_step(carry, _):
    x, total = carry
    x = ppl.sample("x", dist.Normal(0.9 * x, 1.0))
    ppl.sample("y", dist.Normal(x, 0.5))
    return (x, total + x), None  # the running total depends on the carry received


@ppl.gen
def running_total(T):
    """A scan whose carry is not a function of the step's own choices (it
    keeps a running total): ancestor sampling and backward smoothing refuse it."""
    return ppl.sample("steps", _total_step.scan(T)((0.0, 0.0), None))
