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

Control flow around choices: a ``cond``/``switch`` runs each branch followed
by the rest of the program inside ``lax.switch`` (every strategy works
there); a ``scan`` runs as one block (``transforms/adev_control.py``), where
choices are reparameterised or REINFORCE'd with the value of everything
after the scan as the learning signal.
"""

import jax
import jax.numpy as jnp
from jax import lax

from ppl._jax import JIT_PRIMITIVES, ClosedJaxpr, Literal, bind_equation, cond_p, dce_jaxpr, jit_body, scan_p
from ppl.sample_primitive import Site, sample_p
from ppl.trace import join_static, split_static
from ppl.transforms.adev_control import Block, apply_block
from ppl.transforms.evaluate import samples_inside, unpack_cond, unsupported_control_flow
from ppl.transforms.strategies import Enumerate, choose_strategy

__all__ = ["expectation", "Expectation"]

sg = lax.stop_gradient


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
        self.strategies = "auto" if _is_auto(strategies) else dict(strategies or {})

    def with_strategies(self, strategies):
        """The same expectation with other strategies (a dict, or ``"auto"``)."""
        return Expectation(self.fn, strategies)

    def estimate(self, key, *args):
        """The surrogate: its value is an unbiased estimate of E[fn], and so
        is its gradient of grad E[fn]."""
        if _is_auto(self.strategies):
            raise ValueError(
                "strategies='auto' are chosen by a pilot run on concrete arguments: call "
                "ppl.transforms.choose_strategies(objective, key, params, *args) and use "
                "objective.with_strategies(choice.strategies) (vi.fit does both itself)"
            )
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


def _is_auto(strategies):
    return isinstance(strategies, str) and strategies == "auto"


def expectation(fn=None, *, strategies=None):
    """Decorate a program ``fn(key, *args) -> scalar`` as an expected value.

    ``strategies`` maps addresses (tuples or ``"a/b"`` strings) or NumPyro
    distribution types to gradient strategies (``Reparam()``, ``Reinforce()``,
    ``Enumerate()``, ``MeasureValued()`` from ``ppl.transforms``). Default:
    reparameterisation where the distribution has it, else enumeration for
    small finite supports, else REINFORCE with a sampled baseline. Inside
    ``gf.scan`` bodies, where there is no continuation to enumerate or to
    perturb, the default is reparameterisation, else REINFORCE, and
    ``Enumerate``/``MeasureValued`` raise an error naming the address.
    ``strategies="auto"``: chosen per address by measured variance per unit
    time (``choose_strategies``, which ``vi.fit`` runs first).
    """
    if fn is None:
        return lambda f: Expectation(f, strategies)
    return Expectation(fn, strategies)


def _stage(fn, leaves):
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(*leaves)
    if not isinstance(shape, jax.ShapeDtypeStruct) or shape.shape != () or not jnp.issubdtype(shape.dtype, jnp.floating):
        raise TypeError(f"an expectation's program must return a real scalar, got {shape}")
    # Drop what the value does not use (the traces' density bookkeeping): the
    # continuations rerun what follows each choice, so dead code costs per choice.
    jaxpr, _ = dce_jaxpr(closed.jaxpr, [True], instantiate=True)
    return ClosedJaxpr(jaxpr, closed.consts)


class _Surrogate:
    """Evaluates a staged program, each random choice through its strategy.

    Its own eval loop, since a strategy takes the rest of the equations as a
    continuation; the choice (``Site``), jit bodies, ``cond`` unpacking and
    ``scan`` blocks (``adev_control``'s rules) are the evaluator's."""

    # Exact enumerations of scalar choices nest (K^n runs of what follows);
    # past this many, the default strategy for further ones is REINFORCE.
    ENUMERATION_BUDGET = 4096

    def __init__(self, strategies):
        self.strategies = strategies
        self.enumeration_budget = self.ENUMERATION_BUDGET

    def run(self, jaxpr, consts, args):
        env = dict(zip(jaxpr.constvars, consts))
        env.update(zip(jaxpr.invars, args))
        return self._from(jaxpr, 0, env, lambda outs, plain: outs[0], False)

    def _from(self, jaxpr, start, env, after, plain):
        """Run ``jaxpr`` from equation ``start``, then hand its outputs to
        ``after``. ``plain``: the caller stops the gradient of this run (a
        baseline, a perturbed value), so later choices are simply drawn;
        without this, each choice's extra continuations would each run every
        later choice's extra continuations: exponential in the number of choices."""
        read = lambda v: v.val if isinstance(v, Literal) else env[v]
        for index in range(start, len(jaxpr.eqns)):
            eqn = jaxpr.eqns[index]
            invals = [read(v) for v in eqn.invars]
            resume = lambda outs, plain=plain, index=index, eqn=eqn: self._resume(jaxpr, index, eqn, env, outs, after, plain)
            if eqn.primitive is sample_p:
                site = Site.from_equation(eqn, invals)
                if plain:
                    return resume([sg(site.draw())])
                return self._choice(site, lambda value, plain=False: resume([value], plain))
            if not plain and samples_inside(eqn):
                return self._control(eqn, invals, resume)
            env.update(zip(eqn.outvars, bind_equation(eqn, invals)))
        return after([read(v) for v in jaxpr.outvars], plain)

    def _choice(self, site, continuation):
        strategy = choose_strategy(self.strategies, site, enumeration_budget=self.enumeration_budget)
        budget = self.enumeration_budget
        if isinstance(strategy, Enumerate):  # what follows runs once per branch
            self.enumeration_budget = budget // Enumerate.branches(site)
        try:
            return strategy.surrogate(site, continuation)
        finally:
            self.enumeration_budget = budget

    def _resume(self, jaxpr, index, eqn, env, outs, after, plain):
        """The continuation after equation ``index``, given its outputs."""
        rest = dict(env)
        rest.update(zip(eqn.outvars, outs))
        return self._from(jaxpr, index + 1, rest, after, plain)

    def _control(self, eqn, invals, resume):
        """An equation with choices inside (a jit, a cond, a scan), then ``resume``."""
        rule = _CONTROL.get(eqn.primitive)
        if rule is None:
            raise unsupported_control_flow(eqn, samples_inside(eqn), "ADEV")
        return rule(self, eqn, invals, resume)

    def _body(self, closed, invals, resume):
        env = dict(zip(closed.jaxpr.constvars, closed.consts))
        env.update(zip(closed.jaxpr.invars, invals))
        return self._from(closed.jaxpr, 0, env, resume, False)

    def _jit(self, eqn, invals, resume):
        """Nested ``jit``: run the body, then continue after the call."""
        return self._body(jit_body(eqn), invals, resume)

    def _switch(self, eqn, invals, resume):
        """``cond``/``switch``: inside ``lax.switch``, each branch runs followed
        by the rest of the program, so the surrogate is exactly that of the
        branch taken; every strategy works there. The rest is traced once per
        branch."""
        run = lambda branch: lambda operands: self._body(branch, operands, resume)
        return unpack_cond(eqn, invals).switch(run)

    def _block(self, eqn, invals, resume):
        """``scan``: its choices run as one block (``adev_control``); REINFORCE'd
        ones learn from the surrogate of everything after the scan."""
        block = Block(self.strategies)
        rest = resume(apply_block(eqn, invals, block))
        baseline = 0.0
        if block.needs_baseline:  # the rest after an independent run of the block
            baseline = sg(resume(apply_block(eqn, invals, Block(self.strategies, independent=True)), plain=True))
        return rest + block.correction(sg(rest), baseline)


_CONTROL = {**{p: _Surrogate._jit for p in JIT_PRIMITIVES}, cond_p: _Surrogate._switch, scan_p: _Surrogate._block}
