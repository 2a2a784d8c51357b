"""What discovering a model's latents fixes for ``unconstrain``: the position
layout, the check of the observed addresses, and each latent's support where
the program alone fixes it (compared structurally, constraint by constraint)."""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints

from ppl.errors import DiscreteLatentError, format_address, unknown_addresses_error

__all__ = ["Latent", "batched", "same_constraint", "program_support", "layout", "check_addresses"]


class Latent(NamedTuple):
    """One latent choice and its slice of the position: ``position[offset :
    offset + size]`` reshaped (C order) to ``unconstrained_shape``. ``shape``
    is the choice's shape in the trace (vmap and scan axes first)."""

    address: tuple
    shape: tuple
    unconstrained_shape: tuple
    offset: int

    @property
    def size(self):
        return math.prod(self.unconstrained_shape)  # Python ints: cheap on every call


def batched(levels):
    return any(axis is not None for level in levels for axis in level.leaf_axes[1:])


def same_constraint(a, b):
    if type(a) is not type(b):
        return False
    for name, x in vars(a).items():
        y = vars(b)[name]
        if isinstance(x, constraints.Constraint):
            if not same_constraint(x, y):
                return False
        elif not np.array_equal(np.asarray(x), np.asarray(y)):
            return False
    return True


def program_support(spec, levels, leaves):
    """The support of one element when the program alone fixes it: it does
    not depend on the parameters, or they are constants of the program."""
    template = lambda fill: spec.rebuild([jnp.full(s.shape, fill, s.dtype) for s in spec.example_leaves]).support
    with jax.ensure_compile_time_eval():
        zeros, ones = template(0), template(1)
    if same_constraint(zeros, ones):
        return zeros
    if batched(levels) or any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return None
    return spec.rebuild(list(leaves)).support


def layout(sites, batch_ndims):
    """``Latent``s, one after the other: vmap and scan axes, then one element's unconstrained shape."""
    latents, offset = [], 0
    for (address, shape, _, _, element), batch_ndim in zip(sites, batch_ndims):
        latents.append(Latent(address, shape, shape[:batch_ndim] + element.unconstrained_shape, offset))
        offset += latents[-1].size
    return tuple(latents)


def check_addresses(observed, shared):
    unknown = observed - shared.addresses
    if unknown:
        valid = [format_address(a) for a in shared.addresses]
        raise unknown_addresses_error({format_address(a) for a in unknown}, valid, (), "observations")
    discrete = [(a, e.name) for a, (_, _, e) in shared.latents.items() if e.unconstrained_shape is None]
    if discrete:
        named = ", ".join(f"{format_address(a)!r} ({name})" for a, name in discrete)
        raise DiscreteLatentError(
            f"latent choices {named} are discrete: the unconstraining transform (HMC, NUTS, VI's normal "
            "families) covers continuous latents only. Observe them, or sum them out (enumeration) or move "
            "them with a Gibbs kernel (MCMC), or write their guide as a @ppl.gen (VI)",
            [a for a, _ in discrete],
        )
