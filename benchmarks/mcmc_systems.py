"""The models and systems compared in the MCMC benchmark.

Three models, each as a ppl model (a fresh object per call of its ``make_*``,
so nothing compiled for another is reused), a NumPyro model, and a log density
on R^n written by hand with jnp (the position laid out as ppl's unconstrained
position: the latents in the order the model makes them, positive ones on the
log scale with their Jacobian):

- polynomial regression (DESIGN.md): ``coeffs ~ Normal(0, 1)^3``,
  ``ys ~ Normal(c0 + c1 x + c2 x^2, 0.1)`` on 50 points in [0, 1] through
  ``point.vmap``; its posterior is Gaussian, known in closed form;
- eight schools, non-centred: ``mu ~ Normal(0, 5)``, ``tau ~ HalfCauchy(5)``,
  ``theta_tilde ~ Normal(0, 1)^8``, ``y ~ Normal(mu + tau theta_tilde, sigma)``;
- logistic regression on synthetic data (5000 x 20, fixed seed):
  ``weights ~ Normal(0, 1)^20``, ``bias ~ Normal(0, 1)``,
  ``y ~ Bernoulli(logits = X weights + bias)``.

Fixed-step HMC systems are ``fn(key) -> {"coeffs": (chains, draws, 3),
"accepted": (chains, draws)}``; NUTS systems are ``fn(key) -> output`` with
``nuts_draws(output) -> NUTSDraws``. Every system draws its initial positions
uniformly on (-2, 2) in the unconstrained space from its key (ppl's, Stan's
and NumPyro's default).
"""

import functools
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
from jax.scipy.stats import norm
from numpyro.infer import MCMC, NUTS

import ppl
from ppl import dist
from ppl.inference import mcmc
from ppl.transforms import unconstrain

__all__ = [
    "HMC_STEP_SIZE",
    "HMC_LEAPFROG_STEPS",
    "HMC_TRANSITIONS",
    "NUM_WARMUP",
    "NUM_SAMPLES",
    "INIT_RADIUS",
    "Problem",
    "NUTSDraws",
    "make_poly_model",
    "make_poly_data",
    "poly_log_density",
    "poly_exact_posterior",
    "PROBLEMS",
    "hmc_systems",
    "ppl_nuts",
    "blackjax_nuts",
    "blackjax_nuts_sampling",
    "ppl_nuts_kernel_sampling",
    "numpyro_nuts",
    "gradient_chain",
]

HMC_STEP_SIZE, HMC_LEAPFROG_STEPS, HMC_TRANSITIONS = 0.01, 20, 1000
NUM_WARMUP, NUM_SAMPLES = 500, 1000
INIT_RADIUS = 2.0
NOISE_SCALE = 0.1
TRUE_COEFFS = (0.4, -0.9, 0.7)


class NUTSDraws(NamedTuple):
    """What every NUTS system's output becomes: constrained draws by name
    (leaves (chains, draws, ...)), per-draw leapfrog steps and divergences, the
    warmup's leapfrog steps in total (None where the system does not say), and
    the adapted step size of each chain."""

    samples: dict
    n_steps: np.ndarray
    diverging: np.ndarray
    warmup_steps: int | None
    step_size: np.ndarray


def _uniform_start(key, dimension):
    return jax.random.uniform(key, (dimension,), jnp.result_type(float), -INIT_RADIUS, INIT_RADIUS)


# ----- polynomial regression ----------------------------------------------------------


def make_poly_model():
    """A fresh model object: DESIGN.md's polynomial regression."""

    @ppl.gen
    def point(x, coeffs):
        mean = coeffs[0] + coeffs[1] * x + coeffs[2] * x**2
        return ppl.sample("y", dist.Normal(mean, NOISE_SCALE))

    @ppl.gen
    def model(xs):
        coeffs = ppl.sample("coeffs", dist.Normal(0.0, 1.0).expand([3]))
        return ppl.sample("ys", point.vmap(in_axes=(0, None))(xs, coeffs))

    return model


def make_poly_data(num_points=50, seed=0):
    """``(xs, ys)``: 50 points in [0, 1], ys from fixed coefficients plus noise (NumPy RNG)."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(0.0, 1.0, num_points)
    ys = TRUE_COEFFS[0] + TRUE_COEFFS[1] * xs + TRUE_COEFFS[2] * xs**2 + rng.normal(0.0, NOISE_SCALE, num_points)
    dtype = jnp.result_type(float)
    return jnp.asarray(xs, dtype), jnp.asarray(ys, dtype)


def poly_log_density(coeffs, xs, ys):
    """log p(coeffs, ys) by hand."""
    mean = coeffs[0] + coeffs[1] * xs + coeffs[2] * xs**2
    return jnp.sum(norm.logpdf(coeffs, 0.0, 1.0)) + jnp.sum(norm.logpdf(ys, mean, NOISE_SCALE))


def poly_exact_posterior(xs, ys):
    """Mean and covariance of p(coeffs | ys): a linear-Gaussian model (float64, NumPy)."""
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    design = np.stack([np.ones_like(xs), xs, xs**2], axis=1)
    covariance = np.linalg.inv(np.eye(3) + design.T @ design / NOISE_SCALE**2)
    return covariance @ design.T @ ys / NOISE_SCALE**2, covariance


def _hmc_outputs(positions, accepted):
    return {"coeffs": positions, "accepted": accepted}


def _ppl_hmc_call(model, data, num_chains, progress):
    """``mcmc.hmc`` as a user calls it (not inside a jit)."""
    xs, ys = data

    def call(key):
        result = mcmc.hmc(
            key, model, (xs,), {"ys": {"y": ys}}, step_size=HMC_STEP_SIZE, num_integration_steps=HMC_LEAPFROG_STEPS,
            num_samples=HMC_TRANSITIONS, num_chains=num_chains, progress=progress,
        )
        return _hmc_outputs(result.samples["coeffs"], result.stats["acceptance_rate"])

    return call


def _scan_chains(kernel_init, kernel_step, dimension, num_chains, accepted_of):
    """A jittable ``run(key) -> (positions, accepted)`` of ``num_chains``
    vmapped chains of ``HMC_TRANSITIONS`` transitions, each one ``lax.scan``."""

    def chain(key):
        init_key, run_key = jax.random.split(key)
        state = kernel_init(_uniform_start(init_key, dimension))

        def step(state, key):
            state, info = kernel_step(key, state)
            return state, (state.position, accepted_of(info))

        _, outputs = jax.lax.scan(step, state, jax.random.split(run_key, HMC_TRANSITIONS))
        return outputs

    return lambda key: jax.vmap(chain)(jax.random.split(key, num_chains))


def _ppl_hmc_kernel(model, data, num_chains):
    """``mcmc.hmc_kernel(target.log_density, ...)`` driven by a jitted scan (target a jit argument)."""
    xs, ys = data
    target = unconstrain(model, (xs,), {"ys": {"y": ys}})

    @jax.jit
    def run(key, target):
        kernel = mcmc.hmc_kernel(target.log_density, HMC_STEP_SIZE, jnp.ones(target.dimension), HMC_LEAPFROG_STEPS)
        return _scan_chains(kernel.init, kernel.step, target.dimension, num_chains, lambda info: info.is_accepted)(key)

    return lambda key: _hmc_outputs(*run(key, target))


def _blackjax_hmc(data, num_chains):
    """``blackjax.hmc`` on the hand-written log density, in one jit (data as arguments)."""
    xs, ys = data

    @jax.jit
    def run(key, xs, ys):
        log_density = functools.partial(poly_log_density, xs=xs, ys=ys)
        kernel = blackjax.hmc(log_density, HMC_STEP_SIZE, jnp.ones(3), HMC_LEAPFROG_STEPS)
        return _scan_chains(kernel.init, kernel.step, 3, num_chains, lambda info: info.is_accepted)(key)

    return lambda key: _hmc_outputs(*run(key, xs, ys))


def _hand_hmc(data, num_chains):
    """HMC written out: the hand-written log density, leapfrog in a fori_loop,
    identity metric, one jitted scan over transitions, vmap over chains."""
    xs, ys = data

    @jax.jit
    def run(key, xs, ys):
        value_and_grad = jax.value_and_grad(lambda q: poly_log_density(q, xs, ys))

        def leapfrog(_, state):
            q, p, log_density, grad = state
            p = p + 0.5 * HMC_STEP_SIZE * grad
            q = q + HMC_STEP_SIZE * p
            log_density, grad = value_and_grad(q)
            return q, p + 0.5 * HMC_STEP_SIZE * grad, log_density, grad

        def transition(state, key):
            q, log_density, grad = state
            momentum_key, accept_key = jax.random.split(key)
            p = jax.random.normal(momentum_key, q.shape, q.dtype)
            new_q, new_p, new_log_density, new_grad = jax.lax.fori_loop(
                0, HMC_LEAPFROG_STEPS, leapfrog, (q, p, log_density, grad)
            )
            log_ratio = new_log_density - 0.5 * new_p @ new_p - log_density + 0.5 * p @ p
            accept = jnp.log(jax.random.uniform(accept_key, (), q.dtype)) < log_ratio
            state = jax.tree.map(lambda new, old: jnp.where(accept, new, old), (new_q, new_log_density, new_grad), state)
            return state, (state[0], accept)

        def chain(key):
            init_key, run_key = jax.random.split(key)
            q = _uniform_start(init_key, 3)
            _, outputs = jax.lax.scan(transition, (q, *value_and_grad(q)), jax.random.split(run_key, HMC_TRANSITIONS))
            return outputs

        return jax.vmap(chain)(jax.random.split(key, num_chains))

    return lambda key: _hmc_outputs(*run(key, xs, ys))


def hmc_systems(num_chains, data):
    """``{name: fn(key) -> outputs}`` of fixed-step HMC, fresh functions (and a fresh ppl model)."""
    return {
        "hand-written JAX": _hand_hmc(data, num_chains),
        "ppl mcmc.hmc": _ppl_hmc_call(make_poly_model(), data, num_chains, progress=False),
        "ppl hmc_kernel + scan": _ppl_hmc_kernel(make_poly_model(), data, num_chains),
        "BlackJAX": _blackjax_hmc(data, num_chains),
        "ppl mcmc.hmc, progress=True": _ppl_hmc_call(make_poly_model(), data, num_chains, progress=True),
    }


# ----- eight schools ---------------------------------------------------------------------

EIGHT_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def make_eight_schools_model():
    """A fresh model object: non-centred eight schools."""

    @ppl.gen
    def eight_schools(sigma):
        mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
        tau = ppl.sample("tau", dist.HalfCauchy(5.0))
        theta_tilde = ppl.sample("theta_tilde", dist.Normal(0.0, 1.0).expand([8]))
        return ppl.sample("y", dist.Normal(mu + tau * theta_tilde, sigma))

    return eight_schools


def eight_schools_numpyro(sigma, y=None):
    mu = numpyro.sample("mu", nd.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", nd.HalfCauchy(5.0))
    with numpyro.plate("schools", 8):
        theta_tilde = numpyro.sample("theta_tilde", nd.Normal(0.0, 1.0))
        numpyro.sample("y", nd.Normal(mu + tau * theta_tilde, sigma), obs=y)


def eight_schools_log_density(position, sigma, y):
    """Position ``[mu, log tau, theta_tilde (8)]``; the HalfCauchy density of tau times the Jacobian tau."""
    mu, log_tau, theta_tilde = position[0], position[1], position[2:]
    tau = jnp.exp(log_tau)
    half_cauchy = jnp.log(2.0 / (jnp.pi * 5.0)) - jnp.log1p((tau / 5.0) ** 2)
    prior = norm.logpdf(mu, 0.0, 5.0) + half_cauchy + log_tau + jnp.sum(norm.logpdf(theta_tilde))
    return prior + jnp.sum(norm.logpdf(y, mu + tau * theta_tilde, sigma))


def eight_schools_constrain(positions):
    return {"mu": positions[..., 0], "tau": jnp.exp(positions[..., 1]), "theta_tilde": positions[..., 2:]}


# ----- logistic regression -------------------------------------------------------------


def make_logistic_model():
    """A fresh model object: logistic regression with one vector observation."""

    @ppl.gen
    def logistic(features):
        weights = ppl.sample("weights", dist.Normal(0.0, 1.0).expand([features.shape[1]]))
        bias = ppl.sample("bias", dist.Normal(0.0, 1.0))
        return ppl.sample("y", dist.Bernoulli(logits=features @ weights + bias))

    return logistic


def logistic_numpyro(features, y=None):
    weights = numpyro.sample("weights", nd.Normal(0.0, 1.0).expand([features.shape[1]]).to_event(1))
    bias = numpyro.sample("bias", nd.Normal(0.0, 1.0))
    with numpyro.plate("data", features.shape[0]):
        numpyro.sample("y", nd.Bernoulli(logits=features @ weights + bias), obs=y)


def make_logistic_data(num_data=5000, num_features=20, seed=0):
    """``(features, y)``: standard normal features, weights N(0, 0.5^2), bias 0.3 (NumPy RNG)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(num_data, num_features))
    logits = features @ rng.normal(0.0, 0.5, num_features) + 0.3
    y = (rng.random(num_data) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float64)
    dtype = jnp.result_type(float)
    return jnp.asarray(features, dtype), jnp.asarray(y, dtype)


def logistic_log_density(position, features, y):
    """Position ``[weights (20), bias]``."""
    weights, bias = position[:-1], position[-1]
    logits = features @ weights + bias
    likelihood = jnp.sum(y * logits - jnp.logaddexp(0.0, logits))
    return jnp.sum(norm.logpdf(weights)) + norm.logpdf(bias) + likelihood


def logistic_constrain(positions):
    return {"weights": positions[..., :-1], "bias": positions[..., -1]}


class Problem(NamedTuple):
    """A NUTS benchmark model: the ppl model factory, its arguments and observations,
    the NumPyro model and its arguments, the hand-written log density with its
    data arguments, how positions become named draws, and the parameters the
    sanity check compares."""

    make_model: object
    args: tuple
    observations: dict
    numpyro_model: object
    numpyro_args: tuple
    numpyro_kwargs: dict
    log_density: object
    log_density_args: tuple
    dimension: int
    constrain: object
    checked: tuple


def _eight_schools():
    sigma, y = (jnp.asarray(a, jnp.result_type(float)) for a in (EIGHT_SIGMA, EIGHT_Y))
    return Problem(
        make_eight_schools_model, (sigma,), {"y": y}, eight_schools_numpyro, (sigma,), {"y": y},
        eight_schools_log_density, (sigma, y), 10, eight_schools_constrain, ("mu", "tau", "theta_tilde[0]"),
    )


def _logistic():
    features, y = make_logistic_data()
    return Problem(
        make_logistic_model, (features,), {"y": y}, logistic_numpyro, (features,), {"y": y},
        logistic_log_density, (features, y), features.shape[1] + 1, logistic_constrain,
        ("bias", "weights[0]", "weights[1]"),
    )


PROBLEMS = {"eight schools": _eight_schools, "logistic regression 5000x20": _logistic}


# ----- NUTS systems ----------------------------------------------------------------------


def _ppl_draws(result):
    stats = result.stats
    step_size = np.asarray(stats["step_size"])[:, -1]
    return NUTSDraws(dict(result.samples), np.asarray(stats["n_steps"]), np.asarray(stats["diverging"]), None, step_size)


def ppl_nuts(problem, model, num_chains=1, chain_method="vmap", progress=False, num_warmup=NUM_WARMUP, state=None):
    """``mcmc.nuts`` as a user calls it: ``fn(key) -> MCMCResult``, and the draws of a result."""

    def call(key):
        return mcmc.nuts(
            key, model, problem.args, problem.observations, num_warmup=num_warmup, num_samples=NUM_SAMPLES,
            num_chains=num_chains, chain_method=chain_method, progress=progress, state=state,
        )

    return call, _ppl_draws


def _blackjax_sample(log_density, step_size, inverse_mass_matrix, state, key):
    kernel = blackjax.nuts(log_density, step_size, inverse_mass_matrix)

    def step(state, key):
        state, info = kernel.step(key, state)
        return state, (state.position, info.num_integration_steps, info.is_divergent)

    return jax.lax.scan(step, state, jax.random.split(key, NUM_SAMPLES))


def blackjax_nuts(problem):
    """``blackjax.window_adaptation(blackjax.nuts, ...)`` then a ``blackjax.nuts``
    sampling loop, all in one fresh ``jax.jit``: ``fn(key)``, and the draws of an output."""

    @jax.jit
    def run(key, *data):
        log_density = lambda position: problem.log_density(position, *data)
        init_key, warmup_key, sample_key = jax.random.split(key, 3)
        warmup = blackjax.window_adaptation(blackjax.nuts, log_density)
        (state, parameters), info = warmup.run(warmup_key, _uniform_start(init_key, problem.dimension), NUM_WARMUP)
        state, outputs = _blackjax_sample(
            log_density, parameters["step_size"], parameters["inverse_mass_matrix"], state, sample_key
        )
        return outputs, jnp.sum(info.info.num_integration_steps), (state, parameters)

    def draws(output):
        (positions, n_steps, diverging), warmup_steps, (_, parameters) = output
        samples = jax.tree.map(lambda a: np.asarray(a)[None], problem.constrain(positions))
        step_size = np.asarray(parameters["step_size"])[None]
        return NUTSDraws(samples, np.asarray(n_steps)[None], np.asarray(diverging)[None], int(warmup_steps), step_size)

    return lambda key: run(key, *problem.log_density_args), draws


def blackjax_nuts_sampling(problem):
    """BlackJAX's NUTS loop alone (1000 transitions) from ``position`` with a given step size and
    inverse mass matrix, in one jit: ``fn(key, position, step_size, inverse_mass_matrix) -> n_steps``."""

    @jax.jit
    def run(key, position, step_size, inverse_mass_matrix, *data):
        log_density = lambda position: problem.log_density(position, *data)
        state = blackjax.nuts(log_density, step_size, inverse_mass_matrix).init(position)
        return _blackjax_sample(log_density, step_size, inverse_mass_matrix, state, key)[1][1]

    return lambda key, *parameters: run(key, *parameters, *problem.log_density_args)


def ppl_nuts_kernel_sampling(target):
    """ppl's ``mcmc.nuts_kernel(target.log_density, ...)`` driven by one jitted ``lax.scan``
    (1000 transitions): ``fn(key, position, step_size, inverse_mass_matrix) -> n_steps``."""

    @jax.jit
    def run(key, position, step_size, inverse_mass_matrix, target):
        kernel = mcmc.nuts_kernel(target.log_density, step_size, inverse_mass_matrix)

        def step(state, key):
            state, info = kernel.step(key, state)
            return state, info.num_integration_steps

        return jax.lax.scan(step, kernel.init(position), jax.random.split(key, NUM_SAMPLES))[1]

    return lambda key, *parameters: run(key, *parameters, target)


def numpyro_nuts(problem):
    """``MCMC(NUTS(model), ...).run(key, ...)`` as a user writes it (a new MCMC object per
    call, so each call compiles): ``fn(key) -> MCMC``, and the draws of one."""

    def call(key):
        sampler = MCMC(NUTS(problem.numpyro_model), num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES, progress_bar=False)
        sampler.run(key, *problem.numpyro_args, extra_fields=("num_steps", "diverging"), **problem.numpyro_kwargs)
        jax.block_until_ready(sampler.get_samples())  # what a user reads next
        return sampler

    def draws(sampler):
        extra = sampler.get_extra_fields(group_by_chain=True)
        samples = {k: np.asarray(v) for k, v in sampler.get_samples(group_by_chain=True).items()}
        step_size = np.asarray(sampler.last_state.adapt_state.step_size).reshape(-1)
        return NUTSDraws(samples, np.asarray(extra["num_steps"]), np.asarray(extra["diverging"]), None, step_size)

    return call, draws


def gradient_chain(log_density_fn, length=1000):
    """A jitted ``fn(position, *args)`` of ``length`` chained ``value_and_grad``
    evaluations (each at a position moved by the last gradient): the cost of one
    gradient evaluation, without a sampler around it."""

    @jax.jit
    def run(position, *args):
        value_and_grad = jax.value_and_grad(lambda q: log_density_fn(q, *args))

        def step(q, _):
            value, grad = value_and_grad(q)
            return q + 1e-6 * grad, value

        return jax.lax.scan(step, position, None, length)

    return run
