"""Which outputs of a function depend on its first input.

Importance sampling maps a particle function over keys; outputs that do not
depend on the key (observed values, functions of the arguments only) are the
same for every particle and are computed and stored once.
"""

import jax

from ppl._jax import Literal

__all__ = ["depends_on_first_input"]


def depends_on_first_input(fn, first, *rest):
    """A pytree of bools, like ``fn(first, *rest)``: does each output leaf
    depend on ``first``? (Conservative: a primitive's outputs all depend on
    its inputs if any of them does.)

    >>> depends_on_first_input(lambda k, x: (k + 1.0, x * 2.0), 1.0, 2.0)
    (True, False)
    """
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(first, *rest)
    jaxpr = closed.jaxpr
    num_first = len(jax.tree.leaves(first))
    tainted = set(jaxpr.invars[:num_first])
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, Literal) and v in tainted for v in eqn.invars):
            tainted.update(eqn.outvars)
    flags = [not isinstance(v, Literal) and v in tainted for v in jaxpr.outvars]
    return jax.tree.unflatten(jax.tree.structure(shape), flags)
