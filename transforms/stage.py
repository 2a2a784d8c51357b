"""Staging: a generative function as a jaxpr whose random choices are ``sample_p``.

The staged program is ``(key, *array_args) -> (choices, retval)``: the
generative function's simulation, with its density bookkeeping removed. Each
random choice is one ``sample_p`` equation carrying its address and
distribution; combinators appear as the JAX constructs they lower to (``scan``,
``cond``/``select_n``, ``jit``). Transformations (``interpret`` here, ADEV
next) walk it equation by equation: what follows a choice is its continuation.
"""

from typing import Any, NamedTuple

import jax

from ppl._jax import JIT_PRIMITIVES, ClosedJaxpr, dce_jaxpr, jit_body, sub_jaxprs
from ppl.factor_primitive import factor_p
from ppl.sample_primitive import sample_p
from ppl.trace import join_static, split_static

__all__ = ["StagedProgram", "stage", "sample_sites", "choice_sites"]


class StagedProgram(NamedTuple):
    """``jaxpr`` maps ``(key, *array leaves of args)`` to the flat leaves of
    ``(choices, retval)``; ``out_tree`` rebuilds them."""

    jaxpr: Any  # ClosedJaxpr
    args_description: Any
    out_tree: Any

    def __call__(self, key, args):
        """Run the staged program as plain JAX: ``(choices, retval)``."""
        dynamic, _ = split_static(tuple(args))
        flat = jax.core.eval_jaxpr(self.jaxpr.jaxpr, self.jaxpr.consts, key, *dynamic)
        return jax.tree.unflatten(self.out_tree, flat)


def stage(gf, args) -> StagedProgram:
    """Stage ``gf`` on ``args`` (arrays are traced, Python values stay static).

    >>> @ppl.gen
    ... def point(x, coeffs):
    ...     return ppl.sample("y", dist.Normal(coeffs[0] + coeffs[1] * x, 0.1))
    >>> @ppl.gen
    ... def model(xs):
    ...     coeffs = ppl.sample("coeffs", dist.Normal(0.0, 1.0).expand([2]))
    ...     return ppl.sample("ys", point.vmap(in_axes=(0, None))(xs, coeffs))
    >>> program = ppl.transforms.stage(model, (jnp.arange(3.0),))
    >>> [site.params["address"] for site in ppl.transforms.sample_sites(program.jaxpr.jaxpr)]
    [('coeffs',), ('ys', 'y')]
    """
    dynamic, description = split_static(tuple(args))

    def run(key, *leaves):
        trace = gf.simulate(key, join_static(leaves, description))
        return trace.choices, trace.retval

    closed, out_shape = jax.make_jaxpr(run, return_shape=True)(jax.random.key(0), *dynamic)
    jaxpr = _inline_jit(closed.jaxpr)
    jaxpr, _ = dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))
    return StagedProgram(ClosedJaxpr(jaxpr, closed.consts), description, jax.tree.structure(out_shape))


def _inline_jit(jaxpr):
    """The top-level jit of ``simulate`` is bookkeeping: show its body directly."""
    if len(jaxpr.eqns) != 1 or jaxpr.eqns[0].primitive not in JIT_PRIMITIVES:
        return jaxpr
    eqn = jaxpr.eqns[0]
    inner = jit_body(eqn)
    position = {id(v): i for i, v in enumerate(eqn.outvars)}
    if inner.consts or list(eqn.invars) != list(jaxpr.invars) or any(id(v) not in position for v in jaxpr.outvars):
        return jaxpr
    outvars = [inner.jaxpr.outvars[position[id(v)]] for v in jaxpr.outvars]
    return inner.jaxpr.replace(outvars=outvars, debug_info=jaxpr.debug_info)


def sample_sites(jaxpr):
    """Every ``sample_p`` equation in ``jaxpr`` and the jaxprs nested in it."""
    return [eqn for eqn in choice_sites(jaxpr) if eqn.primitive is sample_p]


def choice_sites(jaxpr):
    """Every ``sample_p`` and ``factor_p`` equation, nested jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive in (sample_p, factor_p):
            found.append(eqn)
        for sub in sub_jaxprs(eqn.params):
            found.extend(choice_sites(getattr(sub, "jaxpr", sub)))
    return found
