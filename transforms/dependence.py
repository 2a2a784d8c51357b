"""Which outputs of a function depend on its first input.

Importance sampling maps a particle function over keys; outputs that do not
depend on the key (observed values, functions of the arguments only) are the
same for every particle and are computed and stored once.
"""

import jax

from ppl._jax import JIT_PRIMITIVES, Literal

__all__ = ["depends_on_first_input"]


def depends_on_first_input(fn, first, *rest):
    """A pytree of bools, like ``fn(first, *rest)``: does each output leaf
    depend on ``first``? Conservative: when unsure, it says yes.

    >>> depends_on_first_input(lambda k, x: (k + 1.0, x * 2.0), 1.0, 2.0)
    (True, False)
    """
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(first, *rest)
    num_first = len(jax.tree.leaves(first))
    taints = [i < num_first for i in range(len(closed.jaxpr.invars))]
    flags = _propagate(closed.jaxpr, taints)
    return jax.tree.unflatten(jax.tree.structure(shape), flags)


def _propagate(jaxpr, input_taints):
    """Output taints of ``jaxpr`` given which inputs are tainted."""
    tainted = {v for v, t in zip(jaxpr.invars, input_taints) if t}
    is_tainted = lambda v: not isinstance(v, Literal) and v in tainted
    for eqn in jaxpr.eqns:
        ins = [is_tainted(v) for v in eqn.invars]
        if not any(ins):
            continue
        for var, flag in zip(eqn.outvars, _equation(eqn, ins)):
            if flag:
                tainted.add(var)
    return [is_tainted(v) for v in jaxpr.outvars]


def _equation(eqn, ins):
    name = eqn.primitive.name
    if eqn.primitive in JIT_PRIMITIVES:
        return _propagate(eqn.params["jaxpr"].jaxpr, ins)
    if name == "cond":
        return _cond(eqn, ins)
    if name == "select_n" and not ins[0]:
        return [any(ins[1:])]
    if name == "select_n":  # a tainted choice between identical cases is no choice
        cases = eqn.invars[1:]
        return [not all(c is cases[0] for c in cases) or ins[1]]
    return [True] * len(eqn.outvars)


def _cond(eqn, ins):
    """Each output: tainted if some branch makes it from tainted operands, or if
    the index is tainted and the branches do not all pass the same operand."""
    branches = [b.jaxpr for b in eqn.params["branches"]]
    index_tainted, operand_taints = ins[0], ins[1:]
    per_branch = [_propagate(b, operand_taints) for b in branches]
    out = []
    for j in range(len(eqn.outvars)):
        tainted = any(taints[j] for taints in per_branch)
        if index_tainted and not tainted:
            sources = {_passed_operand(b, j) for b in branches}
            tainted = len(sources) != 1 or None in sources
        out.append(tainted)
    return out


def _passed_operand(jaxpr, j):
    """The operand position that output ``j`` returns unchanged, or None."""
    var = jaxpr.outvars[j]
    for i, invar in enumerate(jaxpr.invars):
        if var is invar:
            return i
    return None
