"""``strategies="auto"``: a gradient strategy per address, chosen by a short
pilot run that measures each applicable strategy's gradient variance and
cost, and keeps the one with the least variance per unit time (variance x
seconds per estimate: the cost of a gradient of a given precision).

Every candidate is unbiased, so the choice changes only the estimator's
variance and cost, never its expectation. Addresses are tried one at a time,
the others at their default; the choice is a plain ``{address: strategy}``
dict, reported with the measured figures.
"""

import time
from typing import NamedTuple

import jax
import numpy as np
from numpyro.distributions import Beta, Dirichlet, Gamma

from ppl.errors import format_address
from ppl.transforms.rejection_reparam import RejectionReparam
from ppl.transforms.strategies import (
    _MEASURE_VALUED_RULES, Enumerate, MeasureValued, Reinforce, Reparam, _base, _support_size, _template,
    observing_choices,
)

__all__ = ["StrategyChoice", "choose_strategies", "candidate_strategies"]


class StrategyChoice(NamedTuple):
    """``strategies``: {address: strategy}, to pass as ``strategies=``;
    ``rows``: per address and candidate, (address, strategy, total gradient
    variance, seconds per estimate, chosen)."""

    strategies: dict
    rows: tuple
    num_pilot: int

    def __repr__(self):
        lines = [f"strategies chosen by variance x time over {self.num_pilot} pilot gradient estimates:",
                 f"  {'address':16s} {'strategy':40s} {'variance':>12s} {'us/estimate':>12s}"]
        for address, strategy, variance, seconds, chosen in self.rows:
            mark = " <- chosen" if chosen else ""
            lines.append(f"  {address:16s} {strategy!r:40s} {variance:12.4g} {seconds * 1e6:12.1f}{mark}")
        return "\n".join(lines)


def candidate_strategies(site, in_scan):
    """The strategies that apply to ``site``'s distribution (inside a scan:
    those that need no continuation).

    >>> site = ppl.transforms.Site.from_equation(
    ...     ppl.transforms.sample_sites(ppl.transforms.stage(ppl.gen(lambda: ppl.sample("x", dist.Normal(0.0, 1.0))), ()).jaxpr.jaxpr)[0],
    ...     [jax.random.key(0), True, 0.0, 1.0])
    >>> candidate_strategies(site, in_scan=False)
    [Reparam(), Reinforce(baseline='sampled'), MeasureValued()]
    """
    prototype = _template(site)
    base = _base(prototype)
    found = []
    if prototype.has_rsample:
        found.append(Reparam())
    found.append(Reinforce())
    if isinstance(base, (Gamma, Beta, Dirichlet)):
        found.append(RejectionReparam())
    if in_scan:
        return found
    if prototype.has_enumerate_support and prototype.event_shape == () and _support_size(prototype) <= 64:
        found.append(Enumerate())
    if prototype.event_shape == () and any(isinstance(base, kind) for kind, _ in _MEASURE_VALUED_RULES):
        found.append(MeasureValued())
    return found


def _discover(objective, key, args):
    """{address: (candidates, in_scan)} of the objective's choices, in program order."""
    found = {}

    def record(site, in_scan):
        if site.address not in found:
            found[site.address] = (candidate_strategies(site, in_scan), in_scan)

    with observing_choices(record):
        jax.eval_shape(lambda k, *a: objective.with_strategies({}).estimate(k, *a), key, *args)
    return found


def _pilot(objective, key, args, num_pilot):
    """(total variance of the gradient estimate, seconds per estimate)."""
    grads = jax.jit(jax.vmap(lambda k: objective.grad_estimate(k, *args)))
    keys = jax.random.split(key, num_pilot)
    out = jax.block_until_ready(grads(keys))  # compile
    seconds = float("inf")
    for _ in range(3):  # the best of three: the least disturbed by other work on the machine
        start = time.perf_counter()
        out = jax.block_until_ready(grads(keys))
        seconds = min(seconds, (time.perf_counter() - start) / num_pilot)
    variance = sum(float(np.sum(np.var(np.asarray(leaf, float).reshape(num_pilot, -1), axis=0, ddof=1)))
                   for leaf in jax.tree.leaves(out))
    return variance, seconds


def choose_strategies(objective, key, params, *args, num_pilot=128):
    """A strategy per address of ``objective`` (an ``Expectation`` of ``(key,
    params, *args)``, e.g. ``vi.elbo(model, guide)``) at ``params``: for each
    address, each applicable strategy (``candidate_strategies``) is measured
    over ``num_pilot`` gradient estimates with the other addresses at their
    default, and the one with the least variance x time is kept. A candidate
    whose variance is not finite is never kept. Returns a ``StrategyChoice``.

    >>> @ppl.gen
    ... def coin(p):
    ...     return ppl.sample("b", dist.Bernoulli(logits=p))
    >>> objective = ppl.transforms.expectation(lambda key, p: (coin.simulate(key, (p,)).retval - 0.3) ** 2)
    >>> choice = ppl.transforms.choose_strategies(objective, jax.random.key(0), 0.2, num_pilot=64)
    >>> choice.strategies
    {('b',): Enumerate()}
    """
    if not isinstance(num_pilot, int) or num_pilot < 8:
        raise ValueError(f"num_pilot must be an int >= 8 (the variance needs several estimates), got {num_pilot!r}")
    args = (params, *args)
    sites = _discover(objective, key, args)
    if not sites:
        raise ValueError("choose_strategies: the objective makes no random choices, so there is nothing to choose")
    chosen, rows = {}, []
    for address, (candidates, _) in sites.items():
        measured = []
        for strategy in candidates:
            variance, seconds = _pilot(objective.with_strategies({address: strategy}), jax.random.fold_in(key, 1), args, num_pilot)
            measured.append((strategy, variance, seconds))
        finite = [m for m in measured if np.isfinite(m[1])]
        if not finite:
            raise FloatingPointError(f"choose_strategies: every strategy's gradient variance at {format_address(address)!r} is not finite")
        best = min(finite, key=lambda m: m[1] * m[2])[0]
        chosen[address] = best
        rows.extend((format_address(address), s, v, t, s is best) for s, v, t in measured)
    return StrategyChoice(chosen, tuple(rows), num_pilot)
