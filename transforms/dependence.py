"""Which outputs of a function depend on its first input.

Importance sampling maps a particle function over keys; outputs that do not
depend on the key (observed values, functions of the arguments only) are the
same for every particle and are computed and stored once.
"""

import jax

from ppl._jax import cond_p, dce_jaxpr, select_n_p
from ppl.transforms.evaluate import Rules, evaluate, evaluate_closed, inlining_jit, unpack_cond

__all__ = ["depends_on_first_input", "split_by_dependence"]


def depends_on_first_input(fn, first, *rest):
    """A pytree of bools, like ``fn(first, *rest)``: does each output leaf
    depend on ``first``? Conservative: when unsure, it says yes.

    >>> depends_on_first_input(lambda k, x: (k + 1.0, x * 2.0), 1.0, 2.0)
    (True, False)
    """
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(first, *rest)
    num_first = len(jax.tree.leaves(first))
    taints = [i < num_first for i in range(len(closed.jaxpr.invars))]
    flags = evaluate(closed.jaxpr, closed.consts, taints, TAINT)
    return jax.tree.unflatten(jax.tree.structure(shape), flags)


def split_by_dependence(fn, first, *rest):
    """``(flags, independent, closed)``: ``flags`` as ``depends_on_first_input``,
    the values of the output leaves that do not depend on ``first`` (in leaf
    order), computed from the same trace of ``fn`` with everything else
    dropped, so ``fn`` is traced once; and that trace (a ``ClosedJaxpr``).

    >>> flags, independent, _ = split_by_dependence(lambda k, x: (k + 1.0, x * 2.0), 1.0, 2.0)
    >>> flags, [float(v) for v in independent]
    ((True, False), [4.0])
    """
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(first, *rest)
    num_first = len(jax.tree.leaves(first))
    taints = [i < num_first for i in range(len(closed.jaxpr.invars))]
    flags = evaluate(closed.jaxpr, closed.consts, taints, TAINT)
    pruned, used_inputs = dce_jaxpr(closed.jaxpr, [not flag for flag in flags])
    inputs = [x for x, used in zip(jax.tree.leaves((first, *rest)), used_inputs) if used]
    independent = jax.core.eval_jaxpr(pruned, closed.consts, *inputs)
    return jax.tree.unflatten(jax.tree.structure(shape), flags), independent, closed


# The values of this evaluation are taints: does the value depend on the first input?


def _if_tainted(rule):
    """An equation without tainted inputs has untainted outputs."""
    return lambda eqn, ins, context: rule(eqn, ins, context) if any(ins) else [False] * len(eqn.outvars)


def _any_input(eqn, ins, context):  # the default: no wrapper, one call per equation
    return [any(ins)] * len(eqn.outvars)


def _select_n(eqn, ins, context):
    if not ins[0]:
        return [any(ins[1:])]
    cases = eqn.invars[1:]  # a tainted choice between identical cases is no choice
    return [not all(c is cases[0] for c in cases) or ins[1]]


def _cond(eqn, ins, context):
    """Each output: tainted if some branch makes it from tainted operands, or if
    the index is tainted and the branches do not all pass the same operand."""
    cond = unpack_cond(eqn, ins)
    per_branch = [evaluate_closed(branch, cond.operands, TAINT) for branch in cond.branches]
    out = []
    for j in range(len(eqn.outvars)):
        tainted = any(taints[j] for taints in per_branch)
        if cond.index and not tainted:
            sources = {_passed_operand(branch.jaxpr, j) for branch in cond.branches}
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


TAINT = inlining_jit(
    Rules({cond_p: _if_tainted(_cond), select_n_p: _if_tainted(_select_n)}, _any_input, constant=False),
    wrap=_if_tainted,
)
