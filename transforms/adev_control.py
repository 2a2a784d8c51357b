"""ADEV inside ``scan``: the body's choices run as one *block*.

The continuation of a choice inside a ``scan`` body is the rest of its step,
the remaining steps and the rest of the program: not a suffix of one jaxpr,
so continuation-passing stops at the scan. Instead the whole scan (with any
``cond``, ``scan`` and ``jit`` nested in it) is run once by the evaluator
(``transforms/evaluate.py``) with the block's rules (``run_block``): reparameterised choices are drawn with their gradient, and
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

from ppl._jax import cond_p, scan_p
from ppl.errors import ControlFlowError
from ppl.sample_primitive import Site, sample_p
from ppl.transforms.evaluate import (
    Rules,
    apply_rule,
    bind_unless,
    checked_bind,
    evaluate,
    evaluate_closed,
    inlining_jit,
    samples_inside,
    unpack_cond,
    unpack_scan,
)
from ppl.transforms.strategies import choose_strategy, fold_key

__all__ = ["Block", "run_block", "apply_block"]

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
    return evaluate(jaxpr, consts, args, BLOCK, block)


def apply_block(eqn, invals, block):
    """One equation's outputs; its choices (nested ones too) go through ``block``."""
    return apply_rule(eqn, invals, BLOCK, block)


def _choice(eqn, invals, block):
    return [block.choice(Site.from_equation(eqn, invals))]


def _scan(eqn, invals, block):
    """Each step is a child block inside ``lax.scan``; their scores add up."""
    scan = unpack_scan(eqn, invals)
    children = []

    def step(carry, x):
        child = block.child()
        children.append(child)  # traced once: its Python flags are read after the scan
        carry, ys = scan.run_body(BLOCK, child, carry, x)
        return carry, (ys, child.scores)

    carry, (ys, scores) = scan.scan(step, scan.xs)
    block.absorb(jnp.sum(scores, axis=0), children)
    return [*carry, *ys]


def _cond(eqn, invals, block):
    """Each branch is a child block inside ``lax.switch``: the taken branch's scores count."""
    children = []

    def make(branch):
        def run(operands):
            child = block.child()
            children.append(child)
            return evaluate_closed(branch, operands, BLOCK, child), child.scores

        return run

    outs, scores = unpack_cond(eqn, invals).switch(make)
    block.absorb(scores, children)
    return outs


def _with_samples(rule):
    return bind_unless(samples_inside, rule)


BLOCK = inlining_jit(
    Rules(
        {sample_p: _choice, scan_p: _with_samples(_scan), cond_p: _with_samples(_cond)},
        default=checked_bind(samples_inside, "ADEV"),
    ),
    wrap=_with_samples,
)
