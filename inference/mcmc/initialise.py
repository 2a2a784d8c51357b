"""Initial positions for gradient kernels: uniform on (-radius, radius)^n in
the unconstrained space (Stan's and NumPyro's default), retried where the log
density or its gradient is not finite; when a chain finds no valid start, an
error that names the choices at fault."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ppl.choicemap import by_path
from ppl.errors import format_address

__all__ = ["MAX_TRIES", "InitializationError", "initial_positions", "check_initial_positions"]

MAX_TRIES = 100


class InitializationError(ValueError):
    """No position with a finite log density and gradient was found."""


def _valid(target, position):
    log_density, grad = jax.value_and_grad(target.log_density)(position)
    return jnp.isfinite(log_density) & jnp.all(jnp.isfinite(grad))


@functools.partial(jax.jit, static_argnames="num_chains")
def initial_positions(target, key, radius, num_chains, discrete=None):
    """``(positions, valid)``: per chain the first of up to ``MAX_TRIES``
    uniform draws with a finite log density and gradient (else the last draw).
    ``discrete``: per chain, values of observed addresses to replace (Gibbs choices)."""

    def one_chain(key, discrete):
        chain_target = target.replace_observations(discrete)
        def untried(carry):
            _, ok, tries, _ = carry
            return ~ok & (tries < MAX_TRIES)

        def attempt(carry):
            _, _, tries, key = carry
            key, draw_key = jax.random.split(key)
            position = chain_target.initial_position(draw_key, radius)
            return position, _valid(chain_target, position), tries + 1, key

        start = (jnp.zeros(target.dimension, jnp.result_type(float)), jnp.array(False), 0, key)
        position, ok, _, _ = jax.lax.while_loop(untried, attempt, attempt(start))
        return position, ok

    return jax.vmap(one_chain)(jax.random.split(key, num_chains), discrete or {})


def check_initial_positions(target, positions, valid, radius):
    """Raise ``InitializationError`` naming the choices whose log density,
    value or gradient is not finite at the first failed chain's last try;
    nothing when every chain is valid, or under a trace (nothing to inspect)."""
    if isinstance(valid, jax.core.Tracer):
        return
    failed = np.flatnonzero(~np.asarray(valid))
    if failed.size == 0:
        return
    position = positions[failed[0]]
    problems = _problems(target, position)
    raise InitializationError(
        f"no initial position with a finite log density and gradient for chain(s) {failed.tolist()} after "
        f"{MAX_TRIES} uniform draws on (-{radius}, {radius}) in the unconstrained space. At the last draw: "
        + "; ".join(problems)
        + ". Check the observations against the model's supports and parameters (an observation outside "
        "its distribution's support makes the log density -inf everywhere), or try a smaller init_radius"
    )


def _problems(target, position):
    densities = by_path(target.site_log_densities(position))
    latent_paths = {latent.address for latent in target.latents}
    problems = []
    for path, value in densities.items():
        value = np.asarray(value)
        if not np.all(np.isfinite(value)):
            kind = "latent" if path in latent_paths else "observed"
            problems.append(f"the log density of {format_address(path)!r} ({kind}) is {_show(value)}")
    grad = np.asarray(jax.grad(target.log_density)(position))
    for latent in target.latents:
        if not np.all(np.isfinite(grad[latent.offset : latent.offset + latent.size])):
            problems.append(f"the gradient with respect to {format_address(latent.address)!r} is not finite")
    if not problems:
        problems.append(f"the total log density is {float(target.log_density(position))}")
    return problems


def _show(value):
    bad = value[~np.isfinite(value)] if value.ndim else value
    return str(np.unique(bad).tolist()[:3] if value.ndim else float(value))
