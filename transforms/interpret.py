"""Running a staged program back, with GFI semantics.

``interpret`` evaluates a jaxpr (``transforms/evaluate.py``) with one rule per
primitive that touches randomness: ``sample_p`` (take the constrained value,
else draw; record the choice and its density), ``factor_p`` (add to the
density), and the control flow a choice can sit inside: nested ``jit``
(inlined), ``scan`` (interpreted step by step inside ``lax.scan``, choices
stacked) and ``cond`` (each branch interpreted inside ``lax.switch``, choices
padded to the union of the branches' addresses). Any other primitive whose
body makes a random choice is an error naming it. What the choices leave
behind is a ``Recorder``'s business; subclass it to record more.
"""

import copy
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppl._jax import cond_p, scan_p
from ppl.choicemap import from_paths
from ppl.combinator_context import step_axis
from ppl.factor_primitive import FactorSite, factor_p
from ppl.sample_primitive import Site, sample_p
from ppl.trace import split_static
from ppl.transforms.evaluate import (
    Rules,
    bind_unless,
    checked_bind,
    choice_avals,
    choices_inside,
    evaluate,
    evaluate_closed,
    inlining_jit,
    unpack_cond,
    unpack_scan,
)
from ppl.transforms.stage import choice_sites

__all__ = ["interpret", "run_staged", "StagedRun", "Recorder"]


class Recorder:
    """What one interpretation accumulates: choices by address (tuples), the
    log density, and the log density of the constrained choices (``kept``).

    To record more, or to change a choice's value (a Jacobian, a value read
    off an unconstrained position), subclass it and override
    ``sample(site)``: it gets the choice's ``Site`` (address, spec, levels,
    placement, key, active, leaves) and returns the choice's value;
    ``super().sample(site)`` takes the constrained value or draws, and
    records it. Add density terms to ``self.log_density`` (and ``self.kept``
    for terms of constrained choices): with ``choices``, these are what flows
    back out of ``scan`` and ``cond``.

    Inside ``scan`` bodies and ``cond`` branches, ``interpret`` records into
    ``child(constraints, scan_depth)``: by default a shallow copy of this
    recorder with fresh choices and densities, so a subclass's configuration
    (and any Python-side record, such as a dict) is shared with it. An array
    a child keeps in its own attributes is traced inside that body or branch
    and must not leave it: override ``child`` to mark such children.

    >>> class Addresses(Recorder):
    ...     def sample(self, site):
    ...         self.seen.append(site.name)
    ...         return super().sample(site)
    >>> step = ppl.gen(lambda carry, _: (ppl.sample("z", dist.Normal(carry, 1.0)), None))
    >>> program = ppl.transforms.stage(step.scan(3), (0.0, None))
    >>> recorder = Addresses({})
    >>> recorder.seen = []
    >>> _ = interpret(program.jaxpr.jaxpr, program.jaxpr.consts, [jax.random.key(0)], recorder)
    >>> recorder.seen, recorder.choices[("z",)].shape
    (['z'], (3,))
    """

    def __init__(self, constraints, scan_depth=0):
        self.constraints = constraints
        self.scan_depth = scan_depth  # how many scans enclose this recorder
        self.choices = {}
        self.sites = {}  # address -> (number of vmap levels, Placement)
        self.log_density = jnp.zeros(())
        self.kept = jnp.zeros(())

    def child(self, constraints, scan_depth):
        """The recorder of a scan body (``scan_depth`` one more) or of a cond
        branch (the same), constrained by ``constraints``."""
        child = copy.copy(self)
        Recorder.__init__(child, constraints, scan_depth)
        return child

    def record(self, address, value, mask):
        """Store ``value`` at ``address`` where ``mask`` holds (leading axes)."""
        mask = mask.reshape(mask.shape + (1,) * (jnp.ndim(value) - mask.ndim))
        previous = self.choices.get(address, jnp.zeros_like(value))
        self.choices[address] = jnp.where(mask, value, previous)

    def sample(self, site):
        """The value of the choice ``site``: constrained, else drawn."""
        constrained = self.constraints.get(site.address)
        value = site.draw() if constrained is None else constrained
        log_density = site.log_prob(value)
        self.log_density = self.log_density + log_density
        if constrained is not None:
            self.kept = self.kept + log_density
        self.record(site.address, value, site.element_active(value))
        self.sites[site.address] = (len(site.levels), site.placement)
        return value

    def factor(self, site):
        """The value of the factor ``site`` (a ``FactorSite``), counted in both densities."""
        total = site.total()
        self.log_density, self.kept = self.log_density + total, self.kept + total
        log_weight = site.value()
        self.record(site.address, log_weight, site.element_active(log_weight))
        self.sites[site.address] = (len(site.levels), site.placement)
        return log_weight


def interpret(jaxpr, consts, args, recorder):
    """Evaluate ``jaxpr`` on ``args``, sending random choices to ``recorder``."""
    return evaluate(jaxpr, consts, args, INTERPRET, recorder)


def _sample(eqn, invals, recorder):
    return [recorder.sample(Site.from_equation(eqn, invals))]


def _factor(eqn, invals, recorder):
    return [recorder.factor(FactorSite.from_equation(eqn, invals))]


def _sub_constraints(recorder, addresses):
    return {a: recorder.constraints[a] for a in addresses if a in recorder.constraints}


def _scan(eqn, invals, recorder):
    scan = unpack_scan(eqn, invals)
    sites = _site_levels(scan.body, {})
    depth = recorder.scan_depth
    constraints = {a: _to_front(v, sites[a], depth) for a, v in _sub_constraints(recorder, sites).items()}

    def step(carry, inputs):
        x, sub_constraints = inputs
        sub = recorder.child(sub_constraints, depth + 1)
        carry, ys = scan.run_body(INTERPRET, sub, carry, x)
        return carry, (ys, sub.choices, sub.log_density, sub.kept)

    carry, (ys, choices, log_density, kept) = scan.scan(step, (scan.xs, constraints))
    for address, value in choices.items():
        num_levels, placement = sites[address]
        recorder.choices[address] = jnp.moveaxis(value, 0, step_axis(placement, num_levels, depth))
    recorder.sites.update(sites)
    recorder.log_density = recorder.log_density + jnp.sum(log_density)
    recorder.kept = recorder.kept + jnp.sum(kept)
    return [*carry, *ys]


def _site_levels(closed, sites):
    """Levels and placement of each site, read off the equations: a site's
    levels are fixed by the vmaps around it, so the body's equation shows them."""
    for site in choice_sites(closed.jaxpr):
        sites.setdefault(site.params["address"], (len(site.params["levels"]), site.params["placement"]))
    return sites


def _to_front(value, site, scan_depth):
    """A constraint's step axis moved to the front, where lax.scan slices."""
    num_levels, placement = site
    return jnp.moveaxis(value, step_axis(placement, num_levels, scan_depth), 0)


def _cond(eqn, invals, recorder):
    cond = unpack_cond(eqn, invals)
    union = cond.choice_avals()

    def make(branch):
        def run(operands):
            sub = recorder.child(_sub_constraints(recorder, choice_avals(branch)), recorder.scan_depth)
            outs = evaluate_closed(branch, operands, INTERPRET, sub)
            choices = {a: sub.choices.get(a, jnp.zeros(aval.shape, aval.dtype)) for a, aval in union.items()}
            return outs, choices, sub.log_density, sub.kept

        return run

    outs, choices, log_density, kept = cond.switch(make)
    for branch in cond.branches:
        _site_levels(branch, recorder.sites)
    for address, value in choices.items():
        recorder.record(address, value, jnp.ones((), bool))
    recorder.log_density = recorder.log_density + log_density
    recorder.kept = recorder.kept + kept
    return outs


def _with_choices(rule):
    return bind_unless(choices_inside, rule)


INTERPRET = inlining_jit(
    Rules(
        {sample_p: _sample, factor_p: _factor, scan_p: _with_choices(_scan), cond_p: _with_choices(_cond)},
        default=checked_bind(choices_inside),
    ),
    wrap=_with_choices,
)


class StagedRun(NamedTuple):
    choices: Any
    retval: Any
    log_density: Any
    log_weight: Any


def run_staged(program, key, args, constraints=None) -> StagedRun:
    """Interpret ``program`` with GFI ``generate`` semantics: constrained
    addresses take their values; ``log_weight`` is their log density.

    >>> @ppl.gen
    ... def model(x):
    ...     slope = ppl.sample("slope", dist.Normal(0.0, 1.0))
    ...     return ppl.sample("y", dist.Normal(slope * x, 1.0))
    >>> program = ppl.transforms.stage(model, (2.0,))
    >>> run = run_staged(program, jax.random.key(0), (2.0,), {"y": 1.0})
    >>> bool(jnp.allclose(run.log_weight, model.generate(jax.random.key(0), {"y": 1.0}, (2.0,))[1]))
    True
    """
    flat = {}
    if constraints is not None:
        leaves = jax.tree_util.tree_flatten_with_path(constraints)[0] if isinstance(constraints, dict) else [((), constraints)]
        flat = {tuple(k.key for k in path): value for path, value in leaves}
    recorder = Recorder(flat)
    dynamic, _ = split_static(tuple(args))
    outs = interpret(program.jaxpr.jaxpr, program.jaxpr.consts, [key, *dynamic], recorder)
    _, retval = jax.tree.unflatten(program.out_tree, outs)
    return StagedRun(from_paths(recorder.choices), retval, recorder.log_density, recorder.kept)
