"""``smc.tempered``: likelihood-tempered SMC from the prior to the posterior
(Del Moral, Doucet and Jasra 2006; Chopin and Papaspiliopoulos 2020, ch. 17).

The targets are p(x) p(y | x)^beta on the model's unconstrained space, beta
from 0 to 1. Each step picks the next beta by bisection so that the ESS (or
the conditional ESS of Zhou, Johansen and Aston 2016) of the incremental
weights falls to ``target_ess * N``, reweights, resamples and moves every
particle with an MCMC kernel tuned from the particles. A fixed schedule
without resampling is annealed importance sampling (Neal 2001); waste-free
SMC (Dau and Chopin 2022) resamples N / P particles and keeps every state
of their P-step chains. The whole run is one ``lax.while_loop``.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import ppl
from ppl.jit import jit_gfi
from ppl.inference.smc.filtering import particle_mesh
from ppl.inference.smc.moves import move_function
from ppl.inference.smc.resampling import resampler
from ppl.inference.smc.tempered_loop import next_temperature, run_tempered

__all__ = ["TemperedResult", "tempered", "next_temperature"]


class TemperedResult(NamedTuple):
    """``log_marginal_likelihood`` (unbiased in Z); ``particles``: a
    ``ppl.Trace`` of the model with a leading particle axis; ``positions``
    (N, d) unconstrained; ``log_weights`` (N,) normalised; ``temperatures``
    (max_num_steps + 1,): beta_0 = 0, ..., 1, then 1 repeated past
    ``num_steps``; per step: ``ess`` (before resampling), ``acceptance_rate``
    and ``step_size`` of the moves (NaN past ``num_steps``)."""

    log_marginal_likelihood: jax.Array
    particles: Any
    positions: jax.Array
    log_weights: jax.Array
    temperatures: jax.Array
    num_steps: jax.Array
    ess: jax.Array
    acceptance_rate: jax.Array
    step_size: jax.Array


def tempered(key, model, args, observations, num_particles, *, kernel="hmc", target_ess=0.5, num_mcmc_steps=10,
             num_integration_steps=5, step_size=None, adapt=True, resample="systematic", criterion="ess",
             temperatures=None, waste_free=None, max_num_steps=500, devices=None):
    """Tempered SMC for ``model`` given ``observations``.

    Arguments:
    - ``num_particles``: N, a Python int.
    - ``kernel``: the MCMC move, "hmc" (default), "mala" or "rwmh" (Gaussian
      random walk), with diagonal metric / proposal scale from the particles'
      variances and the step size tuned towards an acceptance rate (0.65,
      0.57, 0.3) between steps when ``adapt`` (without: an identity metric and
      ``step_size`` fixed); ``step_size`` sets the first step size (by
      default 0.5 d^(-1/4)); ``num_integration_steps`` for HMC.
    - ``target_ess``: the ESS fraction each step falls to; ``criterion``:
      "ess" or "cess" (conditional ESS).
    - ``num_mcmc_steps``: moves per particle per step.
    - ``resample``: a resampling scheme, or None: no resampling (with a fixed
      ``temperatures`` schedule that is annealed importance sampling).
    - ``temperatures``: a fixed increasing schedule ending at 1 instead of the
      adaptive one.
    - ``waste_free``: None, or P: resample N / P particles and keep all P states
      of each one's (P - 1)-move chain (Dau and Chopin 2022); N must be a
      multiple of P and ``num_mcmc_steps`` is unused.
    - ``max_num_steps``: the adaptive schedule's cap (the result holds this
      many entries).
    - ``devices``: None, ``"all"`` or a list of devices to split the particles
      across (``jax.sharding``; N a multiple of their number, and of N / P
      with ``waste_free=P``). The moves run where their particles are; the
      weights, the temperature search, the resampling and the metric and
      step-size tuning see every particle, reduced in the single-device
      order, so the run equals the unsharded one.

    Returns a ``TemperedResult``; jittable and vmappable over keys.

    >>> @ppl.gen
    ... def model():
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 3.0))
    ...     ppl.sample("y", dist.Normal(mu, 0.5).expand([5]))
    >>> result = smc.tempered(jax.random.key(0), model, (), {"y": jnp.full(5, 1.0)}, 500, max_num_steps=50)
    >>> float(result.temperatures[0]), float(result.temperatures[int(result.num_steps)])
    (0.0, 1.0)
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive Python int, got {num_particles!r}")
    if criterion not in ("ess", "cess"):
        raise ValueError(f"criterion must be 'ess' or 'cess', got {criterion!r}")
    if not 0.0 < target_ess < 1.0:
        raise ValueError(f"target_ess must be in (0, 1), got {target_ess!r}")
    if resample is not None:
        resampler(resample)
    if waste_free is not None and (resample is None or num_particles % int(waste_free) or int(waste_free) < 2):
        raise ValueError(f"waste_free=P needs resampling and P >= 2 dividing num_particles; got P={waste_free!r}, "
                         f"num_particles={num_particles}, resample={resample!r}")
    move_function(kernel)  # a bad kernel name fails here
    schedule = None if temperatures is None else _checked_schedule(temperatures)
    mesh = particle_mesh(devices, num_particles)
    if mesh is not None and waste_free is not None and (num_particles // int(waste_free)) % mesh.size:
        raise ValueError(
            f"devices: waste_free={waste_free} resamples num_particles / {waste_free} = {num_particles // int(waste_free)} "
            f"starts, which {mesh.size} devices cannot split evenly"
        )
    settings = (kernel, float(target_ess), int(num_mcmc_steps), int(num_integration_steps),
                None if step_size is None else float(step_size), bool(adapt), resample, criterion == "cess",
                None if waste_free is None else int(waste_free), int(max_num_steps if schedule is None else len(schedule) - 1),
                mesh)
    return _tempered(model, key, tuple(args), ppl.choicemap.to_arrays(observations or {}), num_particles, settings,
                     None if schedule is None else jnp.asarray(schedule))


def _checked_schedule(temperatures):
    import numpy as np

    schedule = np.asarray(temperatures, float)
    if schedule.ndim != 1 or schedule.size < 2 or schedule[0] != 0.0 or schedule[-1] != 1.0 or np.any(np.diff(schedule) <= 0):
        raise ValueError(f"temperatures must increase from 0.0 to 1.0, got {schedule.tolist()}")
    return schedule


@jit_gfi(constraints_arg=2)
def _tempered(model, key, args, observations, num_particles, settings, schedule):
    return TemperedResult(*run_tempered(model, key, args, observations, num_particles, settings, schedule))
