"""ADEV: expected values of programs, and unbiased estimators of their gradients.

``expectation(fn)`` takes a program ``fn(key, *args) -> scalar`` whose random
choices are ppl generative functions' choices (``gf.simulate(key, ...)``,
``gf.generate``...). It stages ``fn`` and interprets the staged program into a
*surrogate*: a scalar whose value is an unbiased estimate of E[fn] and whose
gradient (``jax.grad``, reverse mode) is an unbiased estimate of grad E[fn].
Each random choice contributes through a gradient *strategy*
(``transforms/strategies.py``) chosen per address or distribution type by the
caller. Strategies that need "the rest of the program" (enumeration,
measure-valued derivatives) get it as a continuation: the remaining equations
of the staged program, nested jits included, run by this interpreter (the
continuation-passing reading of ADEV, Lew et al., POPL 2023).
"""

import jax
import jax.numpy as jnp

from ppl._jax import JIT_PRIMITIVES, Literal, bind_equation, sub_jaxprs
from ppl.errors import ControlFlowError, format_address
from ppl.primitives import sample_p
from ppl.trace import join_static, split_static
from ppl.transforms.stage import sample_sites
from ppl.transforms.strategies import Site, choose_strategy

__all__ = ["expectation", "Expectation"]


class Expectation:
    """The expected value of ``fn(key, *args)`` over its random choices.

    >>> import jax, ppl
    >>> from ppl import dist
    >>> @ppl.gen
    ... def normal(mu):
    ...     return ppl.sample("x", dist.Normal(mu, 1.0))
    >>> @ppl.transforms.expectation
    ... def objective(key, mu):
    ...     x = normal.simulate(key, (mu,)).retval
    ...     return (x - 3.0) ** 2
    >>> keys = jax.random.split(jax.random.key(0), 4000)
    >>> grads = jax.vmap(lambda k: objective.grad_estimate(k, 1.0))(keys)
    >>> bool(abs(grads.mean() - 2 * (1.0 - 3.0)) < 0.2)  # d/dmu E[(x - 3)^2] = 2 (mu - 3)
    True
    """

    def __init__(self, fn, strategies=None):
        self.fn = fn
        self.strategies = dict(strategies or {})

    def estimate(self, key, *args):
        """The surrogate: its value is an unbiased estimate of E[fn], and so
        is its gradient of grad E[fn]."""
        leaves, description = split_static((key, *args))  # Python scalars stay static, as in the GFI
        closed = _stage(lambda *dynamic: self.fn(*join_static(dynamic, description)), leaves)
        return _Surrogate(self.strategies).run(closed.jaxpr, closed.consts, leaves)

    def grad_estimate(self, key, params, *args):
        """Unbiased estimate of the gradient of E[fn] with respect to ``params``
        (any pytree of arrays)."""
        return jax.grad(lambda p: self.estimate(key, p, *args))(params)

    def value_and_grad_estimate(self, key, params, *args):
        """``(estimate, grad_estimate)`` from one run."""
        return jax.value_and_grad(lambda p: self.estimate(key, p, *args))(params)


def expectation(fn=None, *, strategies=None):
    """Decorate a program ``fn(key, *args) -> scalar`` as an expected value.

    ``strategies`` maps addresses (tuples or ``"a/b"`` strings) or NumPyro
    distribution types to gradient strategies (``Reparam()``, ``Reinforce()``,
    ``Enumerate()``, ``MeasureValued()`` from ``ppl.transforms``). Default:
    reparameterisation where the distribution has it, else enumeration for
    small finite supports, else REINFORCE with a sampled baseline.
    """
    if fn is None:
        return lambda f: Expectation(f, strategies)
    return Expectation(fn, strategies)


def _stage(fn, leaves):
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(*leaves)
    if not isinstance(shape, jax.ShapeDtypeStruct) or shape.shape != () or not jnp.issubdtype(shape.dtype, jnp.floating):
        raise TypeError(f"an expectation's program must return a real scalar, got {shape}")
    return closed


class _Surrogate:
    """Evaluates a staged program, each random choice through its strategy."""

    def __init__(self, strategies):
        self.strategies = strategies

    def run(self, jaxpr, consts, args):
        env = dict(zip(jaxpr.constvars, consts))
        env.update(zip(jaxpr.invars, args))
        return self._from(jaxpr, 0, env, lambda outs: outs[0])

    def _from(self, jaxpr, start, env, after):
        """Run ``jaxpr`` from equation ``start``, then hand its outputs to ``after``."""
        read = lambda v: v.val if isinstance(v, Literal) else env[v]
        for index in range(start, len(jaxpr.eqns)):
            eqn = jaxpr.eqns[index]
            invals = [read(v) for v in eqn.invars]
            if eqn.primitive is sample_p:
                return self._choice(jaxpr, index, eqn, invals, env, after)
            if eqn.primitive.name in JIT_PRIMITIVES and _sites(eqn):
                return self._enter(jaxpr, index, eqn, invals, env, after)
            if _sites(eqn):
                raise ControlFlowError(
                    f"ADEV: random choices {[format_address(s.params['address']) for s in _sites(eqn)]} sit "
                    f"inside `{eqn.primitive.name}`; the expectation transform supports them at the top level "
                    "and inside nested jit and vmap"
                )
            for var, value in zip(eqn.outvars, bind_equation(eqn, invals)):
                env[var] = value
        return after([read(v) for v in jaxpr.outvars])

    def _choice(self, jaxpr, index, eqn, invals, env, after):
        site = Site(invals[0], invals[1], list(invals[2:]), **eqn.params)

        def continuation(value):
            rest = dict(env)
            rest[eqn.outvars[0]] = value
            return self._from(jaxpr, index + 1, rest, after)

        return choose_strategy(self.strategies, site).surrogate(site, continuation)

    def _enter(self, jaxpr, index, eqn, invals, env, after):
        """A nested jit: run its body, then continue after the call."""
        inner = eqn.params["jaxpr"]
        inner_env = dict(zip(inner.jaxpr.constvars, inner.consts))
        inner_env.update(zip(inner.jaxpr.invars, invals))

        def resume(outs):
            rest = dict(env)
            rest.update(zip(eqn.outvars, outs))
            return self._from(jaxpr, index + 1, rest, after)

        return self._from(inner.jaxpr, 0, inner_env, resume)


def _sites(eqn):
    return [s for j in sub_jaxprs(eqn.params) for s in sample_sites(getattr(j, "jaxpr", j))]
