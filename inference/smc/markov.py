"""The condition under which a step's weight can be computed for any
parent: the carry a step of the scan passes on depends only on that step's
own choices (and ``x``), not on the carry it received, as in a state-space
model whose carry is the state. Ancestor sampling and backward smoothing
weigh each candidate parent by the next step only, which is exact then."""

import jax

from ppl.choicemap import by_path
from ppl.errors import format_address
from ppl.inference.smc.filtering import find_scan
from ppl.sequential import run_prefix, split_observations
from ppl.transforms.dependence import depends_on_first_input

__all__ = ["check_markov_carry", "step_input_shapes", "scan_of"]


def step_input_shapes(model, args, outside, inside, site):
    """``(carry, x, choices)``: shapes of one step's input carry and ``x``,
    and of its choices with the step observations given."""
    key = jax.random.key(0)
    start = jax.eval_shape(lambda k: run_prefix(k, model, args, outside, site.path), key)
    x = None if start.xs is None else jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape[1:], v.dtype), start.xs)
    first = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape[1:], v.dtype), inside) if by_path(inside) else {}
    made = jax.eval_shape(lambda k, c, x: site.step.generate(k, first, (c, x))[0].choices, key, start.init_carry, x)
    return start.init_carry, x, made


def check_markov_carry(model, args, outside, inside, site, who, alternative):
    """Raise, naming ``who`` and ``alternative``, unless the step's carry out
    is a function of its choices and ``x`` alone (checked on the step's
    program, conservatively)."""
    carry, x, made = step_input_shapes(model, args, outside, inside, site)
    carry_out = lambda c, choices, x: site.step.generate(jax.random.key(0), choices, (c, x))[0].retval[0]
    if any(jax.tree.leaves(depends_on_first_input(carry_out, carry, made, x))):
        raise ValueError(
            f"{who} needs the carry that each step of the scan at {format_address(site.path)!r} passes on to "
            "depend only on that step's choices (and x), as in a state-space model whose carry is the state; "
            f"this step's carry also depends on the carry it receives. {alternative}"
        )


def scan_of(model, args, observations, who=None, alternative=""):
    """``(site, observations outside the scan, observations of its steps)``
    of a model's one scan; with ``who``, checked to have a Markov carry."""
    site = find_scan(model, args)
    outside, inside = split_observations(observations, site.path)
    if who is not None:
        check_markov_carry(model, args, outside, inside, site, who, alternative)
    return site, outside, inside
