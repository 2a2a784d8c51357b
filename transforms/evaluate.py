"""The one evaluator for staged programs: an eval loop plus a rule per primitive.

A transformation of a staged program (GFI interpretation, dependence
analysis, ADEV's blocks) is a ``Rules``: a table ``table[primitive] = rule``
with ``rule(eqn, invals, context) -> output values``, a ``default`` rule for
every other primitive (bind the equation), and what constants are to it.
``evaluate`` runs a jaxpr through them, as in JAX's "Writing custom Jaxpr
interpreters"; ``context`` is the transformation's state (a ``Recorder``, a
``Block``), passed to every rule.

Shared here, so that no transformation copies them: nested jit evaluated
inline (``inline_jit``); ``scan`` and ``cond`` equations unpacked
(``unpack_scan``, ``unpack_cond``), all their parameters kept; and the error
for random choices inside control flow ppl cannot interpret
(``unsupported_control_flow``).
"""

from typing import Any, Callable, NamedTuple

from jax import lax

from ppl._jax import JIT_PRIMITIVES, Literal, bind_equation, jit_body, sub_jaxprs
from ppl.errors import ControlFlowError, format_address
from ppl.transforms.stage import choice_sites, sample_sites

__all__ = [
    "Rules",
    "evaluate",
    "evaluate_closed",
    "apply_rule",
    "bind_rule",
    "checked_bind",
    "bind_unless",
    "inline_jit",
    "inlining_jit",
    "choices_inside",
    "samples_inside",
    "choice_avals",
    "ScanEquation",
    "unpack_scan",
    "CondEquation",
    "unpack_cond",
    "unsupported_control_flow",
]


def bind_rule(eqn, invals, context):
    """The default rule: the equation's own meaning (``bind``)."""
    return bind_equation(eqn, invals)


class Rules(NamedTuple):
    """A transformation as ``evaluate`` runs it.

    ``table``: primitive -> ``rule(eqn, invals, context)``, which returns the
    equation's output values (a list). ``default``: the rule for every other
    primitive. ``constant``: what every literal and closed-over constant is
    in this evaluation (``None``: itself; dependence analysis: ``False``,
    "untainted").
    """

    table: dict
    default: Callable = bind_rule
    constant: Any = None


def evaluate(jaxpr, consts, args, rules, context=None):
    """Evaluate ``jaxpr`` on ``args``, each equation through its rule.

    >>> closed = jax.make_jaxpr(lambda x: jnp.sin(x) * 2.0)(1.0)
    >>> cosine = Rules({jax.lax.sin_p: lambda eqn, invals, context: [jnp.cos(*invals)]})
    >>> [float(v) for v in evaluate(closed.jaxpr, closed.consts, [0.0], cosine)]
    [2.0]
    """
    constant, table, default = rules.constant, rules.table, rules.default
    if constant is None:
        env = dict(zip(jaxpr.constvars, consts))
        read = lambda v: v.val if isinstance(v, Literal) else env[v]
    else:
        env = dict.fromkeys(jaxpr.constvars, constant)
        read = lambda v: constant if isinstance(v, Literal) else env[v]
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        outs = table.get(eqn.primitive, default)(eqn, [read(v) for v in eqn.invars], context)
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def evaluate_closed(closed, args, rules, context=None):
    """``evaluate`` of a ``ClosedJaxpr`` (a jit body, a scan body, a cond branch)."""
    return evaluate(closed.jaxpr, closed.consts, args, rules, context)


def apply_rule(eqn, invals, rules, context=None):
    """One equation's output values under ``rules``."""
    return rules.table.get(eqn.primitive, rules.default)(eqn, invals, context)


def inline_jit(rules):
    """The rule for nested jit: its body evaluated inline with ``rules``."""
    return lambda eqn, invals, context: evaluate_closed(jit_body(eqn), invals, rules, context)


def inlining_jit(rules, wrap=None):
    """``rules`` with nested jit (every primitive in ``JIT_PRIMITIVES``)
    evaluated inline by them; ``wrap``, if given, wraps that rule.

    >>> rules = inlining_jit(Rules({}))
    >>> closed = jax.make_jaxpr(lambda x: jax.jit(jnp.sin)(x))(0.0)
    >>> [float(v) for v in evaluate(closed.jaxpr, closed.consts, [0.0], rules)]
    [0.0]
    """
    rule = inline_jit(rules)
    rules.table.update({primitive: rule if wrap is None else wrap(rule) for primitive in JIT_PRIMITIVES})
    return rules


def choices_inside(eqn):
    """The ``sample_p`` and ``factor_p`` equations nested in ``eqn``'s sub-jaxprs."""
    return [site for jaxpr in sub_jaxprs(eqn.params) for site in choice_sites(getattr(jaxpr, "jaxpr", jaxpr))]


def samples_inside(eqn):
    """The ``sample_p`` equations nested in ``eqn``'s sub-jaxprs.

    >>> step = ppl.gen(lambda carry, _: (ppl.sample("z", dist.Normal(carry, 1.0)), None))
    >>> program = ppl.transforms.stage(step.scan(3), (0.0, None))
    >>> [s.params["address"] for e in program.jaxpr.jaxpr.eqns for s in samples_inside(e)]
    [('z',)]
    """
    return [site for jaxpr in sub_jaxprs(eqn.params) for site in sample_sites(getattr(jaxpr, "jaxpr", jaxpr))]


def bind_unless(inside_fn, rule):
    """``rule`` for equations with random choices inside (``inside_fn(eqn)``
    non-empty); every other equation is bound as it is."""

    def guarded(eqn, invals, context):
        return rule(eqn, invals, context) if inside_fn(eqn) else bind_equation(eqn, invals)

    return guarded


def checked_bind(inside_fn=choices_inside, transformation=None):
    """A default rule: bind the equation, unless random choices sit inside
    it (control flow the transformation has no rule for): then the error."""

    def rule(eqn, invals, context):
        sites = inside_fn(eqn)
        if sites:
            raise unsupported_control_flow(eqn, sites, transformation)
        return bind_equation(eqn, invals)

    return rule


def unsupported_control_flow(eqn, sites, transformation=None):
    """The error for random choices (``sites``, their equations) inside the
    primitive of ``eqn``, which ``transformation`` (a name) cannot interpret."""
    prefix = f"{transformation}: " if transformation else ""
    addresses = [format_address(site.params["address"]) for site in sites]
    return ControlFlowError(
        f"{prefix}random choices {addresses} sit inside the primitive `{eqn.primitive.name}`, which ppl cannot "
        "interpret: use ppl's combinators (gf.scan, gf.vmap, ppl.cond/ppl.switch) for control flow around random choices"
    )


def choice_avals(closed):
    """``address -> abstract value`` of the choices (and factors) made in ``closed``."""
    return {site.params["address"]: site.outvars[0].aval for site in choice_sites(closed.jaxpr)}


class ScanEquation(NamedTuple):
    """A ``scan`` equation's parts, its operands split as its body takes them.

    >>> closed = jax.make_jaxpr(lambda c, xs: jax.lax.scan(lambda c, x: (c + x, c), c, xs, unroll=2))(0.0, jnp.arange(3.0))
    >>> scan = unpack_scan(closed.jaxpr.eqns[0], [0.0, jnp.arange(3.0)])
    >>> scan.length, scan.reverse, scan.unroll, len(scan.carry), len(scan.xs)
    (3, False, 2, 1, 1)
    >>> carry, ys = scan.scan(lambda carry, x: scan.run_body(Rules({}), None, carry, [x]), scan.xs[0])
    >>> float(carry[0]), ys[0].tolist()
    (3.0, [0.0, 0.0, 1.0])
    """

    body: Any  # ClosedJaxpr: (*consts, *carry, *x) -> (*carry, *y)
    consts: list
    carry: list
    xs: list
    length: int
    reverse: bool
    unroll: Any
    params: dict  # every parameter of the equation

    def run_body(self, rules, context, carry, x):
        """One step, the body evaluated with ``rules``: ``(carry, ys)``."""
        outs = evaluate_closed(self.body, [*self.consts, *carry, *x], rules, context)
        return outs[: len(self.carry)], outs[len(self.carry) :]

    def scan(self, step_fn, xs):
        """``lax.scan`` of ``step_fn`` from the equation's carry over ``xs``,
        with its length, direction and unrolling."""
        return lax.scan(step_fn, list(self.carry), xs, length=self.length, reverse=self.reverse, unroll=self.unroll)


def unpack_scan(eqn, invals):
    """The ``ScanEquation`` of a ``scan`` equation, given its input values."""
    params = eqn.params
    num_consts, num_carry = params["num_consts"], params["num_carry"]
    consts, carry, xs = invals[:num_consts], invals[num_consts : num_consts + num_carry], invals[num_consts + num_carry :]
    return ScanEquation(
        params["jaxpr"], list(consts), list(carry), list(xs), params["length"], params["reverse"], params["unroll"], params
    )


class CondEquation(NamedTuple):
    """A ``cond`` equation's parts: the branch index, the operands, the branches.

    >>> closed = jax.make_jaxpr(lambda i, x: jax.lax.switch(i, [jnp.sin, jnp.cos], x))(0, 0.0)
    >>> cond = unpack_cond(closed.jaxpr.eqns[-1], [1, 0.0])
    >>> len(cond.branches), [float(v) for v in cond.switch(lambda b: lambda ops: evaluate_closed(b, ops, Rules({})))]
    (2, [1.0])
    """

    index: Any
    operands: list
    branches: tuple  # ClosedJaxprs
    params: dict  # every parameter of the equation

    def switch(self, branch_fn):
        """``lax.switch`` on the index over ``branch_fn(branch)`` (a function of
        the operands) for each branch."""
        return lax.switch(self.index, [branch_fn(branch) for branch in self.branches], list(self.operands))

    def choice_avals(self):
        """The union of the branches' choices: ``address -> abstract value``, by address."""
        union = {}
        for branch in self.branches:
            union.update(choice_avals(branch))
        return dict(sorted(union.items()))


def unpack_cond(eqn, invals):
    """The ``CondEquation`` of a ``cond`` equation, given its input values."""
    return CondEquation(invals[0], list(invals[1:]), tuple(eqn.params["branches"]), eqn.params)
