"""ADEV inside ``scan``: the body's choices run as one *block*.

The continuation of a choice inside a ``scan`` body is the rest of its step,
the remaining steps and the rest of the program: not a suffix of one jaxpr,
so continuation-passing stops at the scan. Instead the whole scan (with any
``cond``, ``scan`` and ``jit`` nested in it) is run once by a plain eval loop
(``run_block``): reparameterised choices are drawn with their gradient, and
REINFORCE'd choices are drawn without it while the block sums their log
densities. Back in the continuation-passing interpreter (``adev.py``), with
``F`` the surrogate of everything after the scan, the block adds

    sum_i (sg F - b_i) (log q_i - sg log q_i)

which is zero in value and whose gradient is the score-function estimator
with the *total* downstream value as the learning signal. That is unbiased
because each ``log q_i`` is the density of choice i given everything drawn
before it, and ``b_i`` (a number, or ``F`` at an independent run of the whole
block, the ``"sampled"`` baseline) is independent of choice i given that past.
Strategies that need the continuation itself (``Enumerate``,
``MeasureValued``, leave-one-out baselines) raise an error naming the address.
"""

import jax.numpy as jnp
from jax import lax

from ppl._jax import JIT_PRIMITIVES, Literal, bind_equation, sub_jaxprs
from ppl.errors import ControlFlowError, format_address
from ppl.sample_primitive import sample_p
from ppl.transforms.stage import sample_sites
from ppl.transforms.strategies import Site, choose_strategy, fold_key

__all__ = ["Block", "run_block", "apply_block", "sites_inside", "site_of"]

sg = lax.stop_gradient


class Block:
    """What the choices of one block leave for the end: the log densities of
    its REINFORCE'd choices, summed by baseline kind."""

    def __init__(self, strategies, independent=False):
        self.strategies = strategies
        self.independent = independent  # draw from folded keys: an independent run, for a baseline
        self.scores = jnp.zeros(3, jnp.result_type(float))  # all; with a sampled baseline; times their fixed baseline
        self.needs_baseline = False

    def child(self):
        return Block(self.strategies, self.independent)

    def add_score(self, log_density, baseline):
        """A REINFORCE'd choice's log density; ``baseline``: None, a number or ``"sampled"``."""
        sampled = isinstance(baseline, str)
        weighted = 0.0 if baseline is None or sampled else baseline * log_density
        self.scores = self.scores + jnp.stack([log_density, log_density if sampled else 0.0, weighted])
        self.needs_baseline = self.needs_baseline or sampled

    def absorb(self, scores, children):
        """Add the summed scores of nested blocks (a scan's steps, a switch's branches)."""
        self.scores = self.scores + scores
        self.needs_baseline = self.needs_baseline or any(c.needs_baseline for c in children)

    def choice(self, site):
        if self.independent:
            site = site._replace(key=fold_key(site.key, 1))
        strategy = choose_strategy(self.strategies, site, in_scan=True)
        if not hasattr(strategy, "in_block"):
            raise ControlFlowError(
                f"ADEV: address {site.name!r} sits inside `scan` with the strategy {strategy!r}, which needs the "
                "rest of the program at the choice; inside gf.scan use Reparam() or Reinforce()"
            )
        return strategy.in_block(site, self)

    def correction(self, signal, baseline):
        """``sum_i (signal - b_i) (log q_i - sg log q_i)``: zero in value."""
        delta = self.scores - sg(self.scores)
        return signal * delta[0] - baseline * delta[1] - delta[2]


def site_of(eqn, invals):
    """The ``Site`` of a ``sample_p`` equation, given its input values."""
    return Site(invals[0], invals[1], list(invals[2:]), **eqn.params)


def sites_inside(eqn):
    """The ``sample_p`` equations nested in ``eqn``'s sub-jaxprs.

    >>> step = ppl.gen(lambda carry, _: (ppl.sample("z", dist.Normal(carry, 1.0)), None))
    >>> program = ppl.transforms.stage(step.scan(3), (0.0, None))
    >>> [s.params["address"] for e in program.jaxpr.jaxpr.eqns for s in sites_inside(e)]
    [('z',)]
    """
    return [s for j in sub_jaxprs(eqn.params) for s in sample_sites(getattr(j, "jaxpr", j))]


def run_block(jaxpr, consts, args, block):
    """Evaluate ``jaxpr``, each random choice through ``block``.

    >>> from ppl.transforms import Reinforce
    >>> coin = ppl.gen(lambda: ppl.sample("b", dist.Bernoulli(0.25)))
    >>> program = ppl.transforms.stage(coin, ())
    >>> block = Block({"b": Reinforce(baseline=None)})
    >>> choices, _ = run_block(program.jaxpr.jaxpr, program.jaxpr.consts, [jax.random.key(0)], block)
    >>> bool(jnp.allclose(block.scores[0], jnp.log(jnp.where(choices == 1, 0.25, 0.75))))
    True
    """
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    read = lambda v: v.val if isinstance(v, Literal) else env[v]
    for eqn in jaxpr.eqns:
        outs = apply_block(eqn, [read(v) for v in eqn.invars], block)
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def apply_block(eqn, invals, block):
    """One equation's outputs; its choices (nested ones too) go through ``block``."""
    if eqn.primitive is sample_p:
        return [block.choice(site_of(eqn, invals))]
    sites = sites_inside(eqn)
    if not sites:
        return bind_equation(eqn, invals)
    name = eqn.primitive.name
    if eqn.primitive in JIT_PRIMITIVES:
        inner = eqn.params["jaxpr"]
        return run_block(inner.jaxpr, inner.consts, invals, block)
    if name == "scan":
        return _scan(eqn.params, invals, block)
    if name == "cond":
        return _cond(eqn.params["branches"], invals, block)
    raise ControlFlowError(
        f"ADEV: random choices {[format_address(s.params['address']) for s in sites]} sit inside `{name}`; the "
        "expectation transform supports them inside jit, vmap, scan and cond (ppl's combinators)"
    )


def _scan(params, invals, block):
    """Each step is a child block inside ``lax.scan``; their scores add up."""
    body, num_consts, num_carry = params["jaxpr"], params["num_consts"], params["num_carry"]
    consts, init, xs = invals[:num_consts], invals[num_consts : num_consts + num_carry], invals[num_consts + num_carry :]
    children = []

    def step(carry, x):
        child = block.child()
        children.append(child)  # traced once: its Python flags are read after the scan
        outs = run_block(body.jaxpr, body.consts, [*consts, *carry, *x], child)
        return outs[:num_carry], (outs[num_carry:], child.scores)

    carry, (ys, scores) = lax.scan(
        step, list(init), list(xs), length=params["length"], reverse=params["reverse"], unroll=params["unroll"]
    )
    block.absorb(jnp.sum(scores, axis=0), children)
    return [*carry, *ys]


def _cond(branches, invals, block):
    """Each branch is a child block inside ``lax.switch``: the taken branch's scores count."""
    children = []

    def make(branch):
        def run(operands):
            child = block.child()
            children.append(child)
            return run_block(branch.jaxpr, branch.consts, operands, child), child.scores

        return run

    outs, scores = lax.switch(invals[0], [make(b) for b in branches], list(invals[1:]))
    block.absorb(scores, children)
    return outs
