"""Enumerative Gibbs: a finite discrete choice drawn from its exact
conditional given every other choice of the trace, by scoring each value of
its support with the model; the elements of a ``gf.vmap`` all at once.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppl.choicemap import as_path, by_path, from_paths, get
from ppl.core import site_log_densities
from ppl.errors import format_address
from ppl.inference.mcmc.kernel import Kernel
from ppl.inference.mcmc.model_sites import choices_moved_by, finite_support, model_sites, site_at
from ppl.levels import level_shape
from ppl.transforms import depends_on_first_input

__all__ = ["GibbsState", "GibbsInfo", "gibbs"]


class GibbsState(NamedTuple):
    """The state of ``gibbs``: the current trace."""

    trace: Any


class GibbsInfo(NamedTuple):
    """The exact conditional the new value was drawn from: its probabilities,
    one per support value on the last axis (the vmap's element axes first)."""

    conditional_probabilities: Any


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
    (a model that passes the vmap's return value on to later choices breaks it;
    that much is checked, an error naming the choice).

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
                "enumerative Gibbs moves a scalar choice, or the scalar elements of a gf.vmap (each from its own conditional)"
            )
        values = values.astype(jnp.result_type(current))
        _check_fixed_structure(model, trace, path)
        if not element_shape:
            return _scalar_step(model, path, values, key, trace)
        _check_no_element_factors(model, trace, path, len(element_shape))
        _check_elements_are_local(model, trace, path, element_shape)
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


def _check_elements_are_local(model, trace, path, element_shape):
    """The conditional-independence assumption, where it can be checked: no
    choice without the element axes (outside the vmap) has a density that
    depends on the value."""
    rest = {p: v for p, v in by_path(trace.choices).items() if p != path}
    densities = lambda value: site_log_densities(model, from_paths({**rest, path: value}), trace.args)
    value = get(trace.choices, path)
    flags, shapes = by_path(depends_on_first_input(densities, value)), by_path(jax.eval_shape(densities, value))
    coupled = [format_address(p) for p, flag in flags.items() if flag and shapes[p].shape[: len(element_shape)] != element_shape]
    if coupled:
        raise TypeError(
            f"gibbs on the elements of {format_address(path)!r}: the density of {', '.join(map(repr, coupled))}, "
            "outside their vmap, depends on them, so the elements are not conditionally independent; "
            "move them with mh instead"
        )


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
