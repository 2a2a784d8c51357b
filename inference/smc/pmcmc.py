"""Particle marginal Metropolis-Hastings (Andrieu, Doucet and Holenstein
2010): an MH kernel over a state-space model's static parameters whose
acceptance ratio uses the particle filter's estimate of p(parameters, y) in
place of the intractable marginal. The estimate is unbiased, so the chain
targets the exact posterior of the parameters (a pseudo-marginal method);
each state also carries one trajectory drawn from the filter's particles,
so the chain's traces are draws of the whole posterior. A ``Kernel``: it
runs under ``mcmc.run`` and composes with the other kernels."""

from typing import Any, NamedTuple

import jax

import ppl
from ppl.choicemap import by_path, from_paths
from ppl.inference.mcmc.kernel import Kernel
from ppl.inference.mcmc.trace_kernels import metropolis_accept
from ppl.inference.smc.particle_filter import particle_filter

__all__ = ["PMMHState", "PMMHInfo", "pmmh"]


class PMMHState(NamedTuple):
    trace: Any  # one trajectory of the model (parameters and states) from the last accepted filter
    log_marginal_likelihood: jax.Array  # the filter's log estimate of p(parameters, observations)


class PMMHInfo(NamedTuple):
    acceptance_rate: jax.Array
    is_accepted: jax.Array


def pmmh(model, args, observations, num_particles, proposal, *, proposal_args=(), **filter_options):
    """PMMH on the static parameters of ``model`` (its choices before the scan
    that ``proposal`` moves).

    - ``proposal``: a generative function ``proposal(parameters, *proposal_args)``
      of the current parameters (a choice map) whose choices are new values at
      the same addresses (a random walk, say); its density both ways enters
      the ratio.
    - ``num_particles`` and ``filter_options`` (``resample``, ``ess_threshold``,
      ``proposal`` of the states as ``state_proposal``) go to ``smc.particle_filter``.

    ``init(parameters)`` takes a choice map of starting values (or a trace of
    the model); ``step(key, state) -> (PMMHState, PMMHInfo)``.

    >>> from tests.smc_models import linear_gaussian, lg_data
    >>> _, _, observations = lg_data(10)
    >>> @ppl.gen
    ... def walk(parameters):
    ...     ppl.sample("x0", dist.Normal(parameters["x0"], 0.5))
    >>> kernel = smc.pmmh(linear_gaussian, (10,), observations, 100, walk)
    >>> state, info = kernel.step(jax.random.key(1), kernel.init({"x0": 0.0}))
    >>> state.trace.choices["steps"]["x"].shape
    (10,)
    """
    observations = ppl.choicemap.to_arrays(observations or {})
    args, proposal_args = tuple(args), tuple(proposal_args)
    options = dict(filter_options)
    options["proposal"] = options.pop("state_proposal", None)

    def filtered(key, parameters):
        filter_key, pick_key = jax.random.split(key)
        result = particle_filter(filter_key, model, args, ppl.merge(observations, parameters), num_particles, **options)
        index = jax.random.categorical(pick_key, result.log_weights)
        return PMMHState(result.particles[index], result.log_marginal_likelihood)

    def init(start):
        parameters = start.choices if isinstance(start, ppl.Trace) else ppl.choicemap.to_arrays(start)
        addresses = _parameter_addresses(proposal, parameters, proposal_args)
        return filtered(jax.random.key(0), _subset(parameters, addresses))

    def step(key, state):
        forward_key, filter_key, accept_key = jax.random.split(key, 3)
        current = _subset(state.trace.choices, _parameter_addresses(proposal, state.trace.choices, proposal_args))
        forward = proposal.simulate(forward_key, (current, *proposal_args))
        proposed = filtered(filter_key, forward.choices)
        backward, _ = proposal.assess(current, (forward.choices, *proposal_args))
        log_alpha = proposed.log_marginal_likelihood - state.log_marginal_likelihood + backward - forward.log_density
        new, info = metropolis_accept(accept_key, log_alpha, proposed, state)
        return new, PMMHInfo(info.acceptance_rate, info.is_accepted)

    return Kernel(init, step)


def _parameter_addresses(proposal, choices, proposal_args):
    """The addresses the proposal makes (from its shapes, at trace time)."""
    made = jax.eval_shape(lambda key, c: proposal.simulate(key, (c, *proposal_args)).choices, jax.random.key(0), choices)
    return tuple(by_path(made))


def _subset(choices, paths):
    flat = by_path(choices)
    missing = [ppl.errors.format_address(p) for p in paths if p not in flat]
    if missing:
        raise ppl.AddressError(f"the PMMH proposal makes {missing}, which the parameters/trace lack")
    return from_paths({p: flat[p] for p in paths})
