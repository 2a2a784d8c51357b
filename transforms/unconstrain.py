"""The unconstraining transform: a model and its observations become a log
density on R^n, the target of gradient-based inference (HMC, NUTS, MALA, VI,
SMC moves).

``unconstrain(model, args, observations)`` lays the model's latent
(unobserved) choices out in one flat vector, the *position*: the latents in
the order the model makes them, each raveled (C order) on its unconstrained
shape. At every evaluation each latent's slice is mapped onto its support by
NumPyro's bijection for that support (``biject_to``), built from the
distribution *at that point*: a support that depends on other choices
(``a2 ~ Uniform(0, 1 - a1)``) is rebuilt every time, never frozen. The log
density adds each bijection's log |det J|, as Stan and NumPyro's
``potential_energy`` do.

It is one interpretation of the staged program (``stage`` + ``interpret``)
with one ``Recorder`` subclass (``unconstrain_recorder.py``), so choices inside submodels, ``gf.vmap`` /
``gf.repeat``, ``gf.scan`` and ``ppl.cond`` / ``ppl.switch`` are covered by
the interpreter's rules: a latent in a scan has a leading step axis, sliced
per step like the observations; a latent in a branch not taken counts in no
density.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.choicemap import by_path, from_paths, get, merge, to_arrays
from ppl.core import site_log_densities
from ppl.errors import AddressError, ConstraintError, format_address
from ppl.combinator_context import staging_improper_priors
from ppl.trace import join_static, split_static
from ppl.transforms.stage import stage
from ppl.transforms.unconstrain_discovery import Latent, batched, check_addresses, layout, program_support, same_constraint
from ppl.transforms.unconstrain_recorder import run

__all__ = ["Latent", "Unconstrained", "unconstrain"]


class _Static(NamedTuple):
    """What one model, argument signature and observed layout fix (hashed by identity)."""

    model: Any
    program: Any
    description: Any
    observed: tuple
    latents: tuple
    specs: tuple  # (spec, levels) per latent
    batch_ndims: tuple  # per latent: how many vmap and scan axes lead its shape
    supports: tuple  # per latent: its support where the program alone fixes it, else None

    __hash__ = object.__hash__
    __eq__ = lambda self, other: self is other


def _run(static, mode, given, args, observations):
    """Interpret the staged program; returns the recorder and ``(choices, retval)``."""
    return run(static.program, static.observed, mode, {**observations, **given}, args)


def _slices(static, position):
    position = jnp.asarray(position)
    if jnp.shape(position) != (_dimension(static),):
        raise ValueError(f"position has shape {jnp.shape(position)}; this model's is ({_dimension(static)},)")
    return {l.address: position[l.offset : l.offset + l.size].reshape(l.unconstrained_shape) for l in static.latents}


def _dimension(static):
    return sum(latent.size for latent in static.latents)


@functools.partial(jax.jit, static_argnums=0)
def _log_density(static, position, args, observations):
    recorder, _ = _run(static, "position", _slices(static, position), args, observations)
    return recorder.log_density


@functools.partial(jax.jit, static_argnums=0)
def _log_density_parts(static, position, args, observations):
    # The recorder's ``kept`` is what the observations and factors add: the likelihood.
    recorder, _ = _run(static, "position", _slices(static, position), args, observations)
    return recorder.log_density - recorder.kept, recorder.kept


@functools.partial(jax.jit, static_argnums=0)
def _constrain(static, position, args, observations):
    recorder, (_, retval) = _run(static, "position", _slices(static, position), args, observations)
    return from_paths({l.address: recorder.choices[l.address] for l in static.latents}), retval


@functools.partial(jax.jit, static_argnums=0)
def _unconstrain(static, values, args, observations):
    recorder, _ = _run(static, "choices", values, args, observations)
    parts = []
    for latent, batch_ndim in zip(static.latents, static.batch_ndims):  # the first entries of each element
        element = recorder.choices[latent.address].reshape(latent.shape[:batch_ndim] + (-1,))
        parts.append(element[..., : int(np.prod(latent.unconstrained_shape[batch_ndim:], dtype=int))].reshape(-1))
    return jnp.concatenate(parts) if parts else jnp.zeros((0,), jnp.result_type(float))


@functools.partial(jax.jit, static_argnums=0)
def _site_densities(static, position, args, observations):
    choices, _ = _constrain(static, position, args, observations)
    full = merge(choices, from_paths(observations))
    return site_log_densities(static.model, full, join_static(args, static.description))


@functools.partial(jax.jit, static_argnums=0)
def _log_likelihood(static, position, args, observations):
    densities = by_path(_site_densities(static, position, args, observations))
    return from_paths({path: densities[path] for path in static.observed})


@functools.partial(jax.jit, static_argnums=0)
def _support_leaves(static, position, args, observations):
    recorder, _ = _run(static, "position", _slices(static, position), args, observations)
    leaves = recorder.shared.leaves
    return {address: leaves[address][0] for address in leaves if leaves[address][1]}


class Unconstrained:
    """A model conditioned on observations, as a log density on R^n (the
    position). Build it with ``unconstrain``; immutable, and a pytree (its
    arrays are the model's array arguments and the observations).

    Attributes: ``latents`` (``Latent`` per latent choice: address, shape,
    ``unconstrained_shape``, ``offset``, ``size``) and ``dimension`` (n).

    >>> @ppl.gen
    ... def model():
    ...     rate = ppl.sample("rate", dist.Gamma(2.0, 1.0))
    ...     ppl.sample("count", dist.Poisson(rate))
    >>> target = ppl.transforms.unconstrain(model, (), {"count": 3})
    >>> position = target.initial_position(jax.random.key(0))  # uniform on (-2, 2)
    >>> choices, retval = target.constrain(position)  # {"rate": exp(position[0])}
    >>> bool(jnp.allclose(target.unconstrain(choices), position))
    True
    >>> log_likelihood = target.log_likelihood(position)  # {"count": log p(3 | rate)}
    >>> bool(jnp.isclose(log_likelihood["count"], dist.Poisson(choices["rate"]).log_prob(3)))
    True
    >>> jax.grad(target.log_density)(position).shape
    (1,)
    """

    __slots__ = ("_static", "_args", "_observations")

    def __init__(self, static, args, observations):
        for name, value in (("_static", static), ("_args", tuple(args)), ("_observations", observations)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"Unconstrained is immutable: cannot set {name!r}")

    def tree_flatten(self):
        return (self._args, self._observations), self._static

    @classmethod
    def tree_unflatten(cls, static, children):
        return cls(static, *children)

    def __repr__(self):
        shown = ", ".join(f"{format_address(l.address)}: {l.unconstrained_shape}" for l in self.latents)
        return f"Unconstrained(dimension={self.dimension}; {shown})"

    @property
    def latents(self):
        return self._static.latents

    @property
    def dimension(self):
        return _dimension(self._static)

    @property
    def model(self):
        return self._static.model

    @property
    def observations(self):
        """The observed values, by path (address tuple -> array)."""
        return dict(self._observations)

    def log_density(self, position):
        """log p(constrain(position), observations) + the log |det J| of the
        bijections: jittable, differentiable, vmappable over positions."""
        return _log_density(self._static, position, self._args, self._observations)

    def log_prior_and_likelihood(self, position):
        """``(log prior, log likelihood)`` at ``position``, from one evaluation:
        the prior is the latents' log density with the Jacobian terms, the
        likelihood what the observations and ``ppl.factor`` terms add; their
        sum is ``log_density``. Tempered SMC raises the likelihood to a power.

        >>> @ppl.gen
        ... def model():
        ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ...     ppl.sample("y", dist.Normal(mu, 1.0))
        >>> prior, likelihood = ppl.transforms.unconstrain(model, (), {"y": 1.0}).log_prior_and_likelihood(jnp.zeros(1))
        >>> round(float(prior), 4), round(float(likelihood), 4)
        (-0.9189, -1.4189)
        """
        return _log_density_parts(self._static, position, self._args, self._observations)

    def initial_position(self, key, radius=2.0):
        """Uniform on (-radius, radius)^n, as Stan's and NumPyro's default initialisation."""
        shape, dtype = (self.dimension,), jnp.result_type(float)
        return jax.random.uniform(key, shape, dtype, minval=-radius, maxval=radius)

    def constrain(self, position):
        """``(choices, retval)``: the latent choice map (nested like the model's
        trace, without the observed addresses and factors) and the model's
        return value at ``position``."""
        return _constrain(self._static, position, self._args, self._observations)

    def unconstrain(self, choices):
        """The position of the latent values in ``choices`` (a choice map that
        holds every latent; other addresses are ignored): ``constrain``'s inverse."""
        values = {}
        for latent in self.latents:
            value = get(choices, latent.address)
            if value is None:
                raise AddressError(f"choices lack the latent {format_address(latent.address)!r}")
            if tuple(jnp.shape(value)) != latent.shape:
                raise ConstraintError(
                    f"address {format_address(latent.address)!r}: value has shape {tuple(jnp.shape(value))}, "
                    f"the choice has shape {latent.shape}"
                )
            values[latent.address] = jnp.asarray(value)
        return _unconstrain(self._static, values, self._args, self._observations)

    def log_likelihood(self, position):
        """The log density of each observed choice at ``position``, nested like
        the observations: one number per choice (summed over its dimensions,
        as ``ppl.site_log_densities``), with the leading axes of ``gf.vmap`` /
        ``gf.scan`` elements, so one choice per datum gives pointwise values."""
        return _log_likelihood(self._static, position, self._args, self._observations)

    def replace_observations(self, values):
        """The same target with new values at some observed addresses (a
        choice map; same shapes): no new discovery or compilation. A Gibbs
        step on a discrete choice held as an observation uses it.

        >>> @ppl.gen
        ... def model():
        ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ...     ppl.sample("y", dist.Normal(mu, 1.0))
        >>> target = ppl.transforms.unconstrain(model, (), {"y": 0.0})
        >>> float(target.replace_observations({"y": 1.0}).observations[("y",)])
        1.0
        """
        if not values:  # nothing replaced: this target (callers need not test for it)
            return self
        new = dict(self._observations)
        for path, value in by_path(to_arrays(values)).items():
            if path not in new:
                raise AddressError(f"{format_address(path)!r} is not an observed address of this target")
            if jnp.shape(value) != jnp.shape(new[path]):
                raise ConstraintError(
                    f"address {format_address(path)!r}: new value has shape {jnp.shape(value)}, "
                    f"the observed value has shape {jnp.shape(new[path])}"
                )
            new[path] = jnp.asarray(value, jnp.result_type(new[path]))
        return Unconstrained(self._static, self._args, new)

    def trace(self, position):
        """The model's ``ppl.Trace`` at ``position``: its latents constrained,
        the observations as they are (for trace kernels on the same model).

        >>> @ppl.gen
        ... def model():
        ...     scale = ppl.sample("scale", dist.HalfNormal(1.0))
        ...     ppl.sample("y", dist.Normal(0.0, scale))
        >>> target = ppl.transforms.unconstrain(model, (), {"y": 0.5})
        >>> trace = target.trace(jnp.zeros(1))
        >>> float(trace.choices["scale"]), float(trace.choices["y"])
        (1.0, 0.5)
        """
        choices, _ = self.constrain(position)
        full = merge(choices, from_paths(self._observations))
        args = join_static(self._args, self._static.description)
        trace, _ = self._static.model.generate(jax.random.key(0), full, args)
        return trace

    def site_log_densities(self, position):
        """The log density of every choice, latent and observed, at
        ``position`` (``ppl.site_log_densities`` of the constrained choices and
        the observations; without the Jacobian terms): where a log density is
        not finite, this says which choice makes it so."""
        return _site_densities(self._static, position, self._args, self._observations)

    def fixed_supports(self):
        """Per latent, the support of its elements where it is the same at
        every position (checked at two random positions when the arguments or
        other choices compute it), else None: a support that depends on other
        choices, varies across a vmap, or sits inside a scan or cond."""
        found = list(self._static.supports)
        if all(support is not None for support in found):
            return tuple(found)
        positions = jnp.stack([self.initial_position(k) for k in jax.random.split(jax.random.key(0))])
        leaves = jax.vmap(lambda p: _support_leaves(self._static, p, self._args, self._observations))(positions)
        for i, (latent, (spec, levels)) in enumerate(zip(self.latents, self._static.specs)):
            if found[i] is None and latent.address in leaves and not batched(levels):
                first, second = (spec.rebuild([leaf[k] for leaf in leaves[latent.address]]).support for k in (0, 1))
                found[i] = first if same_constraint(first, second) else None
        return tuple(found)


jax.tree_util.register_pytree_node_class(Unconstrained)


def _discover(model, args, observed):
    """The ``_Static`` of ``model`` on ``args`` with ``observed`` (path ->
    value shape and dtype): the latents and their layout, from shapes alone."""
    with staging_improper_priors():  # flat priors are staged; positions give them values
        program = stage(model, args)
    dynamic, description = split_static(tuple(args))
    static = _Static(model, program, description, tuple(observed), (), (), (), ())
    found = {}

    def latent_values(dynamic, observations):
        recorder, _ = _run(static, "position", {}, dynamic, observations)
        found["shared"] = shared = recorder.shared
        return {address: recorder.choices[address] for address in shared.latents}

    observations = {path: jax.ShapeDtypeStruct(shape, dtype) for path, (shape, dtype) in observed.items()}
    values = jax.eval_shape(latent_values, dynamic, observations)
    shared = found["shared"]
    check_addresses(set(observed), shared)
    sites = [(a, tuple(values[a].shape), spec, levels, e) for a, (spec, levels, e) in shared.latents.items()]
    batch_ndims = tuple(len(shape) - len(element.shape) for _, shape, _, _, element in sites)  # vmap, scan axes
    return static._replace(
        latents=layout(sites, batch_ndims),
        specs=tuple((spec, levels) for _, _, spec, levels, _ in sites),
        batch_ndims=batch_ndims,
        supports=tuple(program_support(spec, levels, shared.leaves[a][0]) for a, _, spec, levels, _ in sites),
    )


@functools.lru_cache(maxsize=64)
def _cached_discover(model, description, signature, observed, x64):
    """One discovery per model, argument signature, observed layout and
    precision, so new data of the same shapes reuses the compiled programs."""
    dynamic = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in signature]
    return _discover(model, join_static(dynamic, description), dict(observed))


def _hashable(key):
    try:
        hash(key)
        return True
    except TypeError:
        return False


def unconstrain(model, args, observations) -> Unconstrained:
    """``model`` on ``args``, conditioned on ``observations`` (a choice map),
    as a log density on R^n; see ``Unconstrained``.

    The position holds the latents in the order the model makes them (the
    branches of a ``ppl.cond`` / ``ppl.switch`` in branch order, the false
    branch first), each raveled (C order) on its unconstrained shape: the
    choice's vmap and scan axes, then the unconstrained shape of one element
    (``biject_to(support).inverse_shape``; a simplex of k points has k - 1
    coordinates). ``latents`` gives each one's address, shapes and offset.
    Compiled once per model, argument shapes and observed shapes: new data of
    the same shapes reuses the compiled programs.

    >>> @ppl.gen
    ... def model():
    ...     scale = ppl.sample("scale", dist.HalfNormal(1.0))
    ...     ppl.sample("y", dist.Normal(0.0, scale))
    >>> target = ppl.transforms.unconstrain(model, (), {"y": 0.5})
    >>> target.dimension, target.latents[0].address
    (1, ('scale',))
    >>> position = jnp.array([0.0])  # scale = exp(0) = 1
    >>> float(target.constrain(position)[0]["scale"])
    1.0
    >>> expected = dist.HalfNormal(1.0).log_prob(1.0) + dist.Normal(0.0, 1.0).log_prob(0.5)  # log |J| = 0
    >>> bool(jnp.isclose(target.log_density(position), expected))
    True
    """
    dynamic, description = split_static(tuple(args))
    flat = {path: value if isinstance(value, jax.Array) else jnp.asarray(value) for path, value in by_path(to_arrays(observations or {})).items()}
    observed = tuple((path, (tuple(v.shape), v.dtype)) for path, v in flat.items())
    signature = tuple((tuple(jnp.shape(x)), jnp.result_type(x)) for x in dynamic)
    key = (model, description, signature, observed, bool(jax.config.jax_enable_x64))
    static = _cached_discover(*key) if _hashable(key) else _discover(model, tuple(args), dict(observed))
    return Unconstrained(static, dynamic, flat)
