"""NUTS in float64 (run by test_x64.py with JAX_ENABLE_X64=1): Gaussian-process
regression, whose posterior over the function values is Gaussian in closed form."""

import arviz
import jax
import jax.numpy as jnp
import numpy as np

import ppl
from ppl import dist
from ppl.inference import mcmc

XS = jnp.linspace(0.0, 1.0, 12)
NOISE = 0.3


def _kernel(xs):
    squared = (xs[:, None] - xs[None, :]) ** 2
    return jnp.exp(-0.5 * squared / 0.4**2) + 1e-6 * jnp.eye(xs.shape[0])


@ppl.gen
def gp(xs):
    f = ppl.sample("f", dist.MultivariateNormal(jnp.zeros(xs.shape[0]), _kernel(xs)))
    ppl.sample("y", dist.Normal(f, NOISE))


def test_gaussian_process_regression_in_float64():
    assert jax.config.jax_enable_x64
    ys = jnp.sin(6.0 * XS) + NOISE * jax.random.normal(jax.random.key(0), XS.shape)
    result = mcmc.nuts(jax.random.key(1), gp, (XS,), {"y": ys}, num_warmup=500, num_samples=500, num_chains=4,
                       dense_mass=True, progress=False)
    f = result.samples["f"]
    assert f.dtype == jnp.float64 and result.state.kernel_state.position.dtype == jnp.float64
    covariance = jnp.linalg.inv(jnp.linalg.inv(_kernel(XS)) + jnp.eye(XS.shape[0]) / NOISE**2)
    mean = covariance @ ys / NOISE**2
    draws = np.asarray(f)
    se = np.array([float(arviz.mcse(draws[..., i], method="mean")) for i in range(XS.shape[0])])
    assert np.all(np.abs(draws.mean((0, 1)) - mean) < 5 * se), (draws.mean((0, 1)) - mean) / se
    assert not bool(result.stats["diverging"].any())
