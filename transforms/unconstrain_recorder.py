"""The recorder of the unconstraining transform (``unconstrain``): an
interpretation of a staged program in which observed sites take their values
and each latent site takes its slice of the position and maps it onto the
support of its distribution *at that point* (NumPyro's ``biject_to``), adding
the log |det J|. Or, in ``"choices"`` mode, the inverse: latents take
constrained values and record their unconstrained ones.

The one use of ``Recorder`` in the transform: scan bodies and cond branches
get their recorders from ``child``, so the interpreter's rules slice the
unconstrained values per scan step like any constraint.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from numpyro.distributions.transforms import biject_to

from ppl.errors import ConstraintError, format_address
from ppl.distribution_spec import log_density_of
from ppl.levels import level_shape, over_levels
from ppl.transforms.interpret import Recorder, interpret

__all__ = ["Shared", "UnconstrainingRecorder", "run"]


class _Element(NamedTuple):
    """Static facts of one element's distribution (one vmap/scan element)."""

    shape: tuple
    unconstrained_shape: Any  # None for a discrete distribution
    name: str


def _element(spec, address, latent):
    """Shape, unconstrained shape (latents only; None when discrete) and name of one element."""
    facts = {}

    def probe(*leaves):
        distribution = spec.rebuild(leaves)
        shape = tuple(distribution.batch_shape + distribution.event_shape)
        facts.update(shape=shape, name=type(distribution).__name__, unconstrained=None)
        if latent and not distribution.is_discrete:
            try:
                facts["unconstrained"] = tuple(biject_to(distribution.support).inverse_shape(shape))
            except NotImplementedError as error:
                raise TypeError(
                    f"address {format_address(address)!r}: NumPyro has no bijection onto the support "
                    f"{distribution.support} of {facts['name']}"
                ) from error

    jax.eval_shape(probe, *spec.example_leaves)
    return _Element(facts["shape"], facts["unconstrained"], facts["name"])


def _to_support(spec, levels):
    """``(u, active, *leaves) -> (value, log density + log |det J|)``."""

    def one(u, active, *leaves):
        distribution = spec.rebuild(leaves)
        transform = biject_to(distribution.support)
        value = transform(u)
        log_density = jnp.sum(log_density_of(distribution, value))
        log_det = jnp.sum(transform.log_abs_det_jacobian(u, value))
        return value, jnp.where(active, log_density + log_det, 0.0)

    return over_levels(one, levels)


def _masked_log_density(spec, levels):
    """``(value, active, *leaves) -> log density``, -inf outside the support."""

    def one(value, active, *leaves):
        distribution = spec.rebuild(leaves)
        log_density = jnp.sum(log_density_of(distribution, value, validate=False))
        inside = jnp.all(distribution.support.check(value))
        return jnp.where(active, jnp.where(inside, log_density, -jnp.inf), 0.0)

    return over_levels(one, levels)


def _from_support(spec, levels):
    """``(value, active, *leaves) -> u``, raveled into the first entries of an
    array shaped like ``value`` (an unconstrained element is never larger),
    zeros after them and where the choice is inactive: the cond rule pads it
    like a value."""

    def one(value, active, *leaves):
        u = jnp.ravel(biject_to(spec.rebuild(leaves).support).inv(value))
        padded = jnp.zeros(jnp.size(value), u.dtype).at[: u.size].set(u)
        return jnp.where(active, padded, jnp.zeros_like(padded)).reshape(jnp.shape(value))

    return over_levels(one, levels)


class Shared:
    """What a recorder shares with the recorders of its scan bodies and cond
    branches. ``mode``: ``"position"`` (latents get unconstrained values, zeros
    where none is given) or ``"choices"`` (latents get constrained values and
    record their unconstrained ones)."""

    def __init__(self, observed, mode):
        self.observed, self.mode = observed, mode
        self.addresses = set()  # every sample site's
        self.latents = {}  # address -> (spec, levels, element facts), in the order the model makes them
        self.leaves = {}  # address -> (distribution leaves, seen by the outermost recorder)


class UnconstrainingRecorder(Recorder):
    """Observed sites take their values; a latent site takes its slice of the
    position and maps it onto the support of its distribution at this point."""

    def __init__(self, constraints, shared, scan_depth=0, outermost=True):
        super().__init__(constraints, scan_depth)
        self.shared, self.outermost = shared, outermost

    def child(self, constraints, scan_depth):
        return UnconstrainingRecorder(constraints, self.shared, scan_depth, outermost=False)

    def sample(self, site):
        address, spec, levels = site.address, site.spec, site.levels
        observed = address in self.shared.observed
        element = _element(spec, address, latent=not observed)
        self.shared.addresses.add(address)
        if observed:
            _check_shape(self.constraints[address], levels, element, address)
        else:
            self.shared.latents.setdefault(address, (spec, levels, element))
            self.shared.leaves[address] = (site.leaves, self.outermost)
        if observed:
            return self._observed(site)
        if element.unconstrained_shape is None:  # a discrete latent is reported after discovery
            return super().sample(site)
        value, recorded = self._latent(site, element)
        self.record(address, recorded, site.element_active(value))
        self.sites[address] = (len(levels), site.placement)
        return value

    def _observed(self, site):
        """An observed value, its log density -inf where it leaves the support
        (masked here, since the staged distributions do not validate)."""
        value = self.constraints[site.address]
        log_density = jnp.sum(_masked_log_density(site.spec, site.levels)(value, site.active, *site.leaves))
        self.log_density = self.log_density + log_density
        self.kept = self.kept + log_density
        self.record(site.address, value, site.element_active(value))
        self.sites[site.address] = (len(site.levels), site.placement)
        return value

    def _latent(self, site, element):
        """``(value, what the choice map records)``; in position mode, adds the log density."""
        given = self.constraints.get(site.address)
        if self.shared.mode == "choices":
            return given, _from_support(site.spec, site.levels)(given, site.active, *site.leaves)
        if given is None:  # discovering the layout
            given = jnp.zeros(level_shape(site.levels) + element.unconstrained_shape, jnp.result_type(float))
        value, log_density = _to_support(site.spec, site.levels)(given, site.active, *site.leaves)
        self.log_density = self.log_density + jnp.sum(log_density)
        return value, value


def _check_shape(value, levels, element, address):
    expected = level_shape(levels) + element.shape
    if tuple(jnp.shape(value)) != expected:
        raise ConstraintError(
            f"address {format_address(address)!r}: observed value has shape {tuple(jnp.shape(value))} "
            f"but the choice has shape {expected} ({element.name})"
        )


def run(program, observed, mode, constraints, args):
    """Interpret ``program`` on ``(key, *args)``; ``constraints`` holds the
    observed values (``observed``: their paths) and the latents' values.
    Returns the recorder and ``(choices, retval)``."""
    shared = Shared(frozenset(observed), mode)
    recorder = UnconstrainingRecorder(constraints, shared)
    outs = interpret(program.jaxpr.jaxpr, program.jaxpr.consts, [jax.random.key(0), *args], recorder)
    return recorder, jax.tree.unflatten(program.out_tree, outs)
