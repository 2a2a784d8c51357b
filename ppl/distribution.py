"""A NumPyro distribution as a generative function: its only choice is its value."""

import jax
import jax.numpy as jnp
from numpyro.distributions import Distribution, ImproperUniform

from ppl.checked import check, checking
from ppl.core import Edit, GenerativeFunction
from ppl.distribution_spec import log_density_of
from ppl.errors import MissingValueError, check_constraint_value, check_support, format_address
from ppl.combinator_context import improper_priors_staged
from ppl.sample_primitive import bind_sample
from ppl.sites import changed, mark_changed
from ppl.validation import is_static_support, register_support_check

__all__ = ["DistributionGF", "as_gen"]


class DistributionGF(GenerativeFunction):
    """``ppl.as_gen(dist.Normal(0.0, 1.0))``: choices are the bare value."""

    def __init__(self, distribution, ignore_args=False):
        if not isinstance(distribution, Distribution):
            raise TypeError(f"expected a NumPyro distribution, got {type(distribution).__name__}")
        self.distribution = distribution
        self.ignore_args = ignore_args  # as a branch of a switch, which passes every branch the same args

    def __repr__(self):
        return f"as_gen({self.distribution!r})"

    def _edit(self, key, args, constraints, prev, selection, path):
        if args and not self.ignore_args:
            raise TypeError(f"address {format_address(path)!r}: a distribution takes no arguments, got {args!r}")
        distribution = self.distribution
        fresh, reverse = False, 0.0
        if constraints is not None:
            value = check_constraint_value(constraints, distribution, path)
            mark_changed()
        elif prev is not None and not selection.everything:
            value, fresh = prev.choices, False
            if prev.used is not True:  # a previous switch branch may not have made this choice
                # (unused downstream unless the switch moved, which ppl.switch tracks)
                value = jnp.where(prev.used, value, draw(key, distribution, path))
                fresh = jnp.logical_not(prev.used)
        else:
            if prev is not None:  # redrawn: its old density, if its parents have not moved
                reverse = None if changed() and not _fixed(distribution, key) else _old_log_density(distribution, prev)
            value, fresh = draw(key, distribution, path), True
            mark_changed()
        # A fresh draw lies in the support; a given or kept value is masked
        # once, after the sum (a per-element mask would keep XLA from fusing it).
        log_density = jnp.sum(log_density_of(distribution, value, validate=False))
        if constraints is not None:
            log_density = _mask_support(value, distribution, log_density, path)
        elif fresh is not True:
            log_density = jnp.where(jnp.all(distribution.support.check(value)), log_density, -jnp.inf)
        kept = 0.0 if fresh is True else (log_density if fresh is False else jnp.where(fresh, 0.0, log_density))
        return Edit(value, True, log_density, value, log_density, kept, reverse)


def _fixed(distribution, key):
    """Does ``distribution`` depend on no other choice? Under a traced key every
    new draw is traced, so a distribution with no traced parameter is fixed."""
    leaves = jax.tree.leaves(distribution)
    if not isinstance(key, jax.core.Tracer):  # e.g. under jax.disable_jit: cannot tell
        return False
    if len(leaves) == 1 and leaves[0] is distribution:  # not a pytree: cannot tell
        return False
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)


def _old_log_density(distribution, prev):
    log_density = jnp.sum(log_density_of(distribution, prev.choices, validate=False))  # in the unchanged support
    return log_density if prev.used is True else jnp.where(prev.used, log_density, 0.0)


def draw(key, distribution, path):
    address = format_address(path)
    if key is None:
        raise MissingValueError(f"no value for address {address!r}: assess needs a value for every choice")
    if isinstance(distribution, ImproperUniform) and not improper_priors_staged():
        raise ValueError(
            f"address {address!r} has an improper prior ({type(distribution).__name__}): it cannot be "
            "simulated; constrain it (generate/assess) or let inference move it (MCMC, VI)"
        )
    try:
        return bind_sample(key, distribution, path)
    except NotImplementedError as error:
        raise ValueError(f"address {address!r}: {type(distribution).__name__} cannot be sampled") from error


def _mask_support(value, distribution, log_density, path):
    """Concrete values are checked now; traced ones are registered for the
    entry point to check, and get log density -inf outside the support (the
    density itself is computed without NumPyro's per-element mask)."""
    support = distribution.support
    if not isinstance(value, jax.core.Tracer):
        check_support(value, support, path)
        return log_density
    if is_static_support(support):
        register_support_check(path, support)
    if checking():  # under ppl.checked: raise after the call instead of the -inf below
        message = f"address {format_address(path)!r}: observed value outside the support of {type(distribution).__name__}"
        check(support.check(value), message + f" ({support}): {{value}}", value=value)
    return jnp.where(jnp.all(support.check(value)), log_density, -jnp.inf)


def as_gen(distribution):
    """A distribution as a generative function (choices = its value).

    >>> import jax, ppl
    >>> from ppl import dist
    >>> ppl.as_gen(dist.Normal(0.0, 1.0)).assess(0.0, ())[0]  # doctest: +ELLIPSIS
    Array(-0.918..., dtype=float32)
    """
    return DistributionGF(distribution)
