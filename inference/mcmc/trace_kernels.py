"""Kernels on traces (Gen's programmable MCMC): Metropolis-Hastings by
resimulation or with a custom proposal, and enumerative Gibbs.

A *trace kernel* is a ``Kernel`` whose ``init`` takes a ``ppl.Trace`` and
whose state has a ``trace`` field, rebuilt by ``init`` from the trace alone
(so kernels compose: ``cycle``, ``mixture`` in ``compose.py``). Observations
are the constrained choices of the trace (``model.generate(key,
observations, args)``); a kernel moves only the addresses it is given, so
observations stay as they are. Every move goes through the GFI (``regenerate``,
``update``, ``assess``), so the trace's log density stays right.
"""

import difflib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppl.choicemap import Selection, as_path, by_path, flatten, from_paths, get, select
from ppl.core import site_log_densities
from ppl.errors import AddressError, format_address
from ppl.inference.mcmc.kernel import Kernel
from ppl.inference.mcmc.model_sites import choices_moved_by, finite_support, model_sites, site_at
from ppl.levels import level_shape

__all__ = ["MHState", "MHInfo", "GibbsState", "GibbsInfo", "mh", "gibbs", "metropolis_accept", "as_selection"]


class MHState(NamedTuple):
    """The state of ``mh`` and ``involutive``: the current trace."""

    trace: Any


class MHInfo(NamedTuple):
    """``acceptance_rate`` = min(1, exp(log alpha)); ``is_accepted``: was the proposal taken."""

    acceptance_rate: Any
    is_accepted: Any


class GibbsState(NamedTuple):
    """The state of ``gibbs``: the current trace."""

    trace: Any


class GibbsInfo(NamedTuple):
    """The exact conditional the new value was drawn from: its probabilities,
    one per support value on the last axis (the vmap's element axes first)."""

    conditional_probabilities: Any


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
            near = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
            hints.append(f"  {name!r}" + (f" (did you mean {', '.join(map(repr, near))}?)" if near else ""))
        raise AddressError(
            f"{what} name addresses that are not choices of the model:\n" + "\n".join(hints)
            + f"\nthe model's choices: {', '.join(map(repr, valid)) or 'none'}"
        )


# ----- enumerative Gibbs ------------------------------------------------------------


def gibbs(model, address, support=None):
    """Enumerative Gibbs on a finite discrete choice: every value of its
    support is scored with the model and the new value is drawn from the
    exact conditional given every other choice.

    The support comes from the choice's distribution (NumPyro's
    ``enumerate_support``: Bernoulli, Categorical, DiscreteUniform with fixed
    bounds, ...), or from ``support=`` (a 1-d array of the values). A scalar
    choice is scored with K ``update``s, vectorised over the K values.

    A choice inside ``gf.vmap`` / ``gf.repeat`` (one per datum, such as a
    mixture assignment ``z[i]``) is moved element by element, all at once:
    each element's conditional comes from per-element log densities
    (``ppl.site_log_densities``) with every element set to the same value, K
    evaluations of the model for K values, not K * N. This assumes the
    elements are *conditionally independent*: element i of the choice
    changes only the densities of element i of the choices in the same vmap
    (its observation ``y[i]``), and no choice outside the vmap depends on it
    (a model that passes the vmap's return value on to later choices breaks it).

    The choice must not pick a ``ppl.cond`` / ``ppl.switch`` branch that makes
    choices (they have no value in the other branch, so there is no
    conditional given them): that is an error naming them.

    ``init(trace) -> GibbsState``; ``step(key, state) -> (GibbsState, GibbsInfo)``.

    >>> @ppl.gen
    ... def model():
    ...     z = ppl.sample("z", dist.Bernoulli(0.5))
    ...     ppl.sample("y", dist.Normal(2.0 * z, 1.0))
    >>> trace, _ = model.generate(jax.random.key(0), {"y": 2.0}, ())
    >>> kernel = ppl.inference.mcmc.gibbs(model, "z")
    >>> state, info = kernel.step(jax.random.key(1), kernel.init(trace))
    >>> [round(p, 3) for p in info.conditional_probabilities.tolist()]  # p(z | y = 2) = (e^-2, 1) / (e^-2 + 1)
    [0.119, 0.881]
    """
    path = as_path(address)
    explicit = None if support is None else jnp.ravel(jnp.asarray(support))

    def step(key, state):
        trace = state.trace
        site = site_at(model_sites(model, trace.args), path)
        if site.is_factor:
            raise TypeError(f"address {format_address(path)!r} is a factor (ppl.factor), not a random choice")
        values = finite_support(site) if explicit is None else explicit
        current = get(trace.choices, path)
        element_shape = level_shape(site.levels)
        if tuple(jnp.shape(current)) != element_shape:
            raise TypeError(
                f"address {format_address(path)!r}: one choice holds an array of shape {jnp.shape(current)}; "
                "enumerative Gibbs moves a scalar choice, or the elements of a gf.vmap one at a time"
            )
        values = values.astype(jnp.result_type(current))
        _check_fixed_structure(model, trace, path)
        if not element_shape:
            return _scalar_step(model, path, values, key, trace)
        _check_no_element_factors(model, trace, path, len(element_shape))
        return _elementwise_step(model, path, values, element_shape, key, trace)

    return Kernel(GibbsState, step)


def _scalar_step(model, path, values, key, trace):
    update_key, choice_key = jax.random.split(key)
    moved = lambda value: model.update(update_key, trace, from_paths({path: value}), trace.args)[:2]
    traces, log_weights = jax.vmap(moved)(values)  # log p(value, rest) - log p(trace)
    index = jax.random.categorical(choice_key, log_weights)
    return GibbsState(jax.tree.map(lambda x: x[index], traces)), GibbsInfo(jax.nn.softmax(log_weights))


def _elementwise_step(model, path, values, element_shape, key, trace):
    update_key, choice_key = jax.random.split(key)
    rest = {p: v for p, v in by_path(trace.choices).items() if p != path}

    def element_log_densities(value):  # every element at `value`: (*element_shape,)
        choices = from_paths({**rest, path: jnp.full(element_shape, value)})
        densities = jax.tree.leaves(site_log_densities(model, choices, trace.args))
        per_element = [_sum_trailing(d, len(element_shape)) for d in densities if jnp.shape(d)[: len(element_shape)] == element_shape]
        return sum(per_element)

    log_densities = jnp.moveaxis(jax.vmap(element_log_densities)(values), 0, -1)  # (*element_shape, K)
    index = jax.random.categorical(choice_key, log_densities)
    new_trace, _, _ = model.update(update_key, trace, from_paths({path: values[index]}), trace.args)
    return GibbsState(new_trace), GibbsInfo(jax.nn.softmax(log_densities, axis=-1))


def _sum_trailing(x, num_leading):
    return jnp.sum(x, axis=tuple(range(num_leading, jnp.ndim(x))))


def _check_fixed_structure(model, trace, path):
    """A choice that decides a ``ppl.cond`` / ``ppl.switch`` branch making choices
    has no Gibbs conditional given them (they exist in one branch only)."""
    factors = {a for a, site in model_sites(model, trace.args).items() if site.is_factor}
    moved = [format_address(p) for p in choices_moved_by(model, trace, path) if p not in factors]
    if moved:
        named = ", ".join(map(repr, moved))
        raise TypeError(
            f"gibbs on {format_address(path)!r}: the choices {named} change with its value (it picks a "
            "ppl.cond / ppl.switch branch that makes them), so it has no conditional given them; move them "
            f"together: mh(model, [{format_address(path)!r}, {named}]), or an involutive move"
        )


def _check_no_element_factors(model, trace, path, num_axes):
    """Factors count only in ``assess``'s total, not per element: a factor
    inside the vmap would be left out of the elements' conditionals."""
    for site in model_sites(model, trace.args).values():
        if site.is_factor and len(site.levels) >= num_axes:
            raise NotImplementedError(
                f"gibbs on the elements of {format_address(path)!r}: the factor {format_address(site.address)!r} "
                "sits inside a vmap, and per-element conditionals do not count factors; write it as a choice "
                "(e.g. an observed Bernoulli) or use gibbs on a scalar choice"
            )
