"""Running a staged program back, with GFI semantics.

``interpret`` is an eval loop over a jaxpr plus one rule per primitive that
touches randomness: ``sample_p`` (take the constrained value, else draw;
record the choice and its density), ``factor_p`` (add to the density), and
the control flow a choice can sit inside: nested ``jit`` (inlined), ``scan``
(interpreted step by step inside ``lax.scan``, choices stacked) and ``cond``
(each branch interpreted inside ``lax.switch``, choices padded to the union of
the branches' addresses). Any other primitive whose body makes a random
choice is an error naming it.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ppl._jax import JIT_PRIMITIVES, Literal, bind_equation, sub_jaxprs
from ppl.choicemap import from_paths
from ppl.errors import ControlFlowError, format_address
from ppl.primitives import (
    active_function,
    factor_p,
    factor_function,
    factor_total_function,
    step_axis,
    log_prob_function,
    sample_function,
    sample_p,
)
from ppl.trace import split_static
from ppl.transforms.stage import choice_sites

__all__ = ["interpret", "run_staged", "StagedRun", "Recorder"]


class Recorder:
    """What one interpretation accumulates: choices by address (tuples), the
    log density, and the log density of the constrained choices."""

    def __init__(self, constraints, scan_depth=0):
        self.constraints = constraints
        self.scan_depth = scan_depth  # how many scans enclose this recorder
        self.choices = {}
        self.sites = {}  # address -> (number of vmap levels, Placement)
        self.log_density = jnp.zeros(())
        self.kept = jnp.zeros(())

    def child(self, constraints, scan_depth):
        """The recorder of a scan body or a cond branch (subclasses return their own kind)."""
        return Recorder(constraints, scan_depth)

    def _record(self, address, value, mask):
        mask = mask.reshape(mask.shape + (1,) * (jnp.ndim(value) - mask.ndim))
        previous = self.choices.get(address, jnp.zeros_like(value))
        self.choices[address] = jnp.where(mask, value, previous)

    def sample(self, invals, address, spec, levels, placement):
        key, active, *leaves = invals
        constrained = self.constraints.get(address)
        value = sample_function(spec, levels)(key, active, *leaves) if constrained is None else constrained
        log_density = log_prob_function(spec, levels)(value, active, *leaves)
        self.log_density = self.log_density + log_density
        if constrained is not None:
            self.kept = self.kept + log_density
        self._record(address, value, active_function(levels)(value, active))
        self.sites[address] = (len(levels), placement)
        return value

    def factor(self, invals, address, levels, placement):
        active, log_weight = invals
        total = factor_total_function(levels)(active, log_weight)
        self.log_density, self.kept = self.log_density + total, self.kept + total
        log_weight = factor_function(levels)(active, log_weight)
        self._record(address, log_weight, active_function(levels)(log_weight, active))
        self.sites[address] = (len(levels), placement)
        return log_weight


def _has_sites(eqn):
    return any(choice_sites(getattr(j, "jaxpr", j)) for j in _subs(eqn))


def _subs(eqn):
    return sub_jaxprs(eqn.params)


def interpret(jaxpr, consts, args, recorder):
    """Evaluate ``jaxpr`` on ``args``, sending random choices to ``recorder``."""
    env = {}
    read = lambda v: v.val if isinstance(v, Literal) else env[v]
    for var, value in zip(jaxpr.constvars, consts):
        env[var] = value
    for var, value in zip(jaxpr.invars, args):
        env[var] = value
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        outs = _apply(eqn, invals, recorder)
        for var, value in zip(eqn.outvars, outs):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def _apply(eqn, invals, recorder):
    name = eqn.primitive.name
    if eqn.primitive is sample_p:
        return [recorder.sample(invals, **eqn.params)]
    if eqn.primitive is factor_p:
        return [recorder.factor(invals, **eqn.params)]
    if not _has_sites(eqn):
        return bind_equation(eqn, invals)
    if name in JIT_PRIMITIVES:
        inner = eqn.params["jaxpr"]
        return interpret(inner.jaxpr, inner.consts, invals, recorder)
    if name == "scan":
        return _scan(eqn, invals, recorder)
    if name == "cond":
        return _cond(eqn, invals, recorder)
    sites = [format_address(s.params["address"]) for j in _subs(eqn) for s in choice_sites(getattr(j, "jaxpr", j))]
    raise ControlFlowError(
        f"random choices {sites} sit inside the primitive `{name}`, which ppl cannot interpret: "
        "use ppl's combinators (gf.scan, gf.vmap, ppl.cond/ppl.switch) for control flow around random choices"
    )


def _addresses(closed):
    return {s.params["address"]: s.outvars[0].aval for s in choice_sites(closed.jaxpr)}


def _sub_constraints(recorder, addresses):
    return {a: recorder.constraints[a] for a in addresses if a in recorder.constraints}


def _scan(eqn, invals, recorder):
    params = eqn.params
    body, num_consts, num_carry = params["jaxpr"], params["num_consts"], params["num_carry"]
    consts, init, xs = invals[:num_consts], invals[num_consts : num_consts + num_carry], invals[num_consts + num_carry :]
    constraints = _sub_constraints(recorder, _addresses(body))

    sites = {}

    def step(carry, inputs):
        x, sub_constraints = inputs
        sub = recorder.child(sub_constraints, recorder.scan_depth + 1)
        outs = interpret(body.jaxpr, body.consts, [*consts, *carry, *x], sub)
        return outs[:num_carry], (outs[num_carry:], sub.choices, sub.log_density, sub.kept)

    _find_sites(body, sites)
    constraints = {a: _to_front(v, sites[a], recorder.scan_depth) for a, v in constraints.items()}
    carry, (ys, choices, log_density, kept) = lax.scan(
        step, list(init), (list(xs), constraints), length=params["length"], reverse=params["reverse"]
    )
    for address, value in choices.items():
        num_levels, placement = sites[address]
        recorder.choices[address] = jnp.moveaxis(value, 0, step_axis(placement, num_levels, recorder.scan_depth))
    recorder.sites.update(sites)
    recorder.log_density = recorder.log_density + jnp.sum(log_density)
    recorder.kept = recorder.kept + jnp.sum(kept)
    return [*carry, *ys]


def _find_sites(closed, sites):
    """Levels and placement of each site, read off the equations: a site's
    levels are fixed by the vmaps around it, so the body's equation shows them."""
    for site in choice_sites(closed.jaxpr):
        sites.setdefault(site.params["address"], (len(site.params["levels"]), site.params["placement"]))


def _find_sites_all(closed_jaxprs, sites):
    for closed in closed_jaxprs:
        _find_sites(closed, sites)


def _to_front(value, site, scan_depth):
    """A constraint's step axis moved to the front, where lax.scan slices."""
    num_levels, placement = site
    return jnp.moveaxis(value, step_axis(placement, num_levels, scan_depth), 0)


def _cond(eqn, invals, recorder):
    branches = eqn.params["branches"]
    index, operands = invals[0], invals[1:]
    union = {}
    for branch in branches:
        union.update(_addresses(branch))
    union = dict(sorted(union.items()))

    def make(branch):
        def run(ops):
            sub = recorder.child(_sub_constraints(recorder, _addresses(branch)), recorder.scan_depth)
            outs = interpret(branch.jaxpr, branch.consts, ops, sub)
            choices = {a: sub.choices.get(a, jnp.zeros(aval.shape, aval.dtype)) for a, aval in union.items()}
            return outs, choices, sub.log_density, sub.kept

        return run

    outs, choices, log_density, kept = lax.switch(index, [make(b) for b in branches], list(operands))
    _find_sites_all(branches, recorder.sites)
    for address, value in choices.items():
        recorder._record(address, value, jnp.ones((), bool))
    recorder.log_density = recorder.log_density + log_density
    recorder.kept = recorder.kept + kept
    return outs


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
