"""The systems of the tempered-SMC benchmark: Bayesian linear regression (a
conjugate model, so log Z is exact) by adaptive likelihood-tempered SMC with
HMC moves, through ``smc.tempered`` and through BlackJAX's
``adaptive_tempered_smc``, with the same particles, moves (HMC, fixed step
size, identity metric, the same number of leapfrog steps and moves per
step), systematic resampling and target ESS."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm
from scipy.stats import multivariate_normal

import ppl
from ppl import dist
from ppl.inference import smc

__all__ = ["DIM", "ROWS", "NOISE", "STEP_SIZE", "LEAPFROG", "MOVES", "TARGET_ESS", "data", "exact_log_z",
           "ppl_tempered", "blackjax_tempered"]

DIM, ROWS, NOISE = 8, 200, 1.0
STEP_SIZE, LEAPFROG, MOVES, TARGET_ESS = 0.05, 5, 10, 0.5
MAX_STEPS = 200


@ppl.gen
def regression(xs):
    weights = ppl.sample("weights", dist.Normal(0.0, 1.0).expand([DIM]))
    ppl.sample("y", dist.Normal(xs @ weights, NOISE))


def data(seed=0):
    key_x, key_w, key_y = jax.random.split(jax.random.key(seed), 3)
    xs = jax.random.normal(key_x, (ROWS, DIM)) / np.sqrt(DIM)
    ys = xs @ jax.random.normal(key_w, (DIM,)) + NOISE * jax.random.normal(key_y, (ROWS,))
    return xs, ys


def exact_log_z(xs, ys):
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    return multivariate_normal(np.zeros(ROWS), NOISE**2 * np.eye(ROWS) + xs @ xs.T).logpdf(ys)


def ppl_tempered(n):
    """``f(key, xs, ys) -> (log Z, number of tempering steps)``, jitted."""

    def run(key, xs, ys):
        result = smc.tempered(key, regression, (xs,), {"y": ys}, n, kernel="hmc", step_size=STEP_SIZE, adapt=False,
                              num_integration_steps=LEAPFROG, num_mcmc_steps=MOVES, target_ess=TARGET_ESS,
                              max_num_steps=MAX_STEPS)
        return result.log_marginal_likelihood, result.num_steps

    return jax.jit(run)


def blackjax_tempered(n):
    """BlackJAX's adaptive tempered SMC on the hand-written log prior and
    likelihood, its steps in a ``lax.while_loop``: ``f(key, xs, ys) -> (log Z, steps)``."""
    import blackjax
    from blackjax.smc import extend_params, resampling

    def run(key, xs, ys):
        log_prior = lambda w: jnp.sum(norm.logpdf(w))
        log_likelihood = lambda w: jnp.sum(norm.logpdf(ys, xs @ w, NOISE))
        parameters = extend_params({"step_size": STEP_SIZE, "inverse_mass_matrix": jnp.ones(DIM),
                                    "num_integration_steps": LEAPFROG})
        sampler = blackjax.adaptive_tempered_smc(log_prior, log_likelihood, blackjax.hmc.build_kernel(), blackjax.hmc.init,
                                                 parameters, resampling.systematic, TARGET_ESS, num_mcmc_steps=MOVES)
        init_key, loop_key = jax.random.split(key)
        state = sampler.init(jax.random.normal(init_key, (n, DIM)))

        def step(carry):
            state, key, log_z, steps = carry
            key, step_key = jax.random.split(key)
            state, info = sampler.step(step_key, state)
            return state, key, log_z + info.log_likelihood_increment, steps + 1

        running = lambda carry: (carry[0].tempering_param < 1.0) & (carry[3] < MAX_STEPS)
        _, _, log_z, steps = jax.lax.while_loop(running, step, (state, loop_key, jnp.zeros(()), jnp.zeros((), jnp.int32)))
        return log_z, steps

    return jax.jit(run)
