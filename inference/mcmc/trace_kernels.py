"""Kernels on traces (Gen's programmable MCMC): Metropolis-Hastings by
resimulation or with a custom proposal (enumerative Gibbs is in
``gibbs.py``, involutive MCMC in ``involutive.py``).

A *trace kernel* is a ``Kernel`` whose ``init`` takes a ``ppl.Trace`` and
whose state has a ``trace`` field, rebuilt by ``init`` from the trace alone
(so kernels compose: ``cycle``, ``mixture`` in ``compose.py``). Observations
are the constrained choices of the trace (``model.generate(key,
observations, args)``); a kernel moves only the addresses it is given, so
observations stay as they are. Every move goes through the GFI (``regenerate``,
``update``, ``assess``), so the trace's log density stays right.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppl.choicemap import Selection, flatten, select
from ppl.errors import AddressError, did_you_mean
from ppl.inference.mcmc.kernel import Kernel

__all__ = ["MHState", "MHInfo", "mh", "metropolis_accept", "as_selection", "check_model_addresses"]


class MHState(NamedTuple):
    """The state of ``mh`` and ``involutive``: the current trace."""

    trace: Any


class MHInfo(NamedTuple):
    """``acceptance_rate`` = min(1, exp(log alpha)); ``is_accepted``: was the proposal taken."""

    acceptance_rate: Any
    is_accepted: Any


def as_selection(addresses):
    """A ``ppl.Selection`` from a selection, an address or a list of addresses.

    >>> as_selection(["a", "b/c"]) == ppl.select("a", "b/c")
    True
    """
    if isinstance(addresses, Selection):
        return addresses
    if isinstance(addresses, str) or (isinstance(addresses, tuple) and all(isinstance(a, str) for a in addresses)):
        return select(addresses)
    return select(*addresses)


def metropolis_accept(key, log_alpha, proposed, current):
    """``(trace, MHInfo)``: ``proposed`` with probability min(1, exp(log_alpha)),
    else ``current`` (a NaN ratio rejects).

    >>> trace, info = metropolis_accept(jax.random.key(0), jnp.log(0.25), 1.0, 0.0)
    >>> float(info.acceptance_rate)
    0.25
    """
    log_alpha = jnp.where(jnp.isnan(log_alpha), -jnp.inf, log_alpha)
    is_accepted = jnp.log(jax.random.uniform(key)) < log_alpha
    chosen = jax.tree.map(lambda new, old: jnp.where(is_accepted, new, old), proposed, current)
    return chosen, MHInfo(jnp.exp(jnp.minimum(log_alpha, 0.0)), is_accepted)


def mh(model, selection=None, *, proposal=None, proposal_args=()):
    """Metropolis-Hastings on the traces of ``model``; give exactly one of:

    - ``selection`` (a ``ppl.Selection``, an address or a list of addresses):
      the selected choices are redrawn from the model (``regenerate``), whose
      weight is the log acceptance ratio;
    - ``proposal``: a generative function called as ``proposal(trace,
      *proposal_args)`` on the *current trace* (its ``choices``, ``args``,
      ``retval``), whose choices are new values at addresses of the model.
      Forward: simulate it and ``update`` the model trace with its choices
      (weight w, discard); backward: ``assess`` it on the discard given the
      new trace. log alpha = w + log q(discard; new) - log q(choices; old).

    ``init(trace) -> MHState``; ``step(key, state) -> (MHState, MHInfo)``.

    >>> @ppl.gen
    ... def model():
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     ppl.sample("y", dist.Normal(mu, 1.0))
    >>> @ppl.gen
    ... def random_walk(trace, scale):
    ...     ppl.sample("mu", dist.Normal(trace.choices["mu"], scale))
    >>> trace, _ = model.generate(jax.random.key(0), {"y": 0.5}, ())
    >>> kernel = ppl.inference.mcmc.mh(model, proposal=random_walk, proposal_args=(0.5,))
    >>> state, info = jax.jit(kernel.step)(jax.random.key(1), kernel.init(trace))
    >>> float(state.trace.choices["y"]), info.is_accepted.shape
    (0.5, ())
    """
    if (selection is None) == (proposal is None):
        given = "both" if proposal is not None else "neither"
        raise TypeError(
            f"mh takes a selection (resimulate those addresses from the model) or proposal= (a generative "
            f"function of the current trace), exactly one of them; {given} given"
        )
    step = _resimulation_step(model, as_selection(selection)) if proposal is None else _proposal_step(model, proposal, tuple(proposal_args))
    return Kernel(MHState, step)


def _resimulation_step(model, selection):
    def step(key, state):
        proposal_key, accept_key = jax.random.split(key)
        trace = state.trace
        proposed, log_weight = model.regenerate(proposal_key, trace, selection, trace.args)
        trace, info = metropolis_accept(accept_key, log_weight, proposed, trace)
        return MHState(trace), info

    return step


def _proposal_step(model, proposal, proposal_args):
    def step(key, state):
        forward_key, update_key, accept_key = jax.random.split(key, 3)
        trace = state.trace
        forward = proposal.simulate(forward_key, (trace, *proposal_args))
        check_model_addresses(forward.choices, trace.choices, "the proposal's choices")
        proposed, log_weight, discard = model.update(update_key, trace, forward.choices, trace.args)
        backward, _ = proposal.assess(discard, (proposed, *proposal_args))
        log_alpha = log_weight + backward - forward.log_density
        trace, info = metropolis_accept(accept_key, log_alpha, proposed, trace)
        return MHState(trace), info

    return step


def check_model_addresses(choices, model_choices, what):
    """``AddressError`` when ``choices`` name addresses that are not choices
    (leaves) of ``model_choices``, with the nearest valid ones.

    >>> check_model_addresses({"mu": 0.0}, {"mu": 1.0, "y": 2.0}, "the proposal's choices")
    """
    valid = list(flatten(model_choices)) if isinstance(model_choices, dict) else []
    unknown = [a for a in (flatten(choices) if isinstance(choices, dict) else {"<value>": choices}) if a not in valid]
    if unknown:
        hints = []
        for name in unknown:
            hints.append(f"  {name!r}" + did_you_mean(name, valid))
        raise AddressError(
            f"{what} name addresses that are not choices of the model:\n" + "\n".join(hints)
            + f"\nthe model's choices: {', '.join(map(repr, valid)) or 'none'}"
        )
