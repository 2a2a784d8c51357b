"""Variational families built from a model's latent choices: mean-field
normal, full-rank normal, and amortised (a network maps the data to the
family's parameters).

Each family is a generative function of ``(params, *args)`` that makes the
model's latent choices at the model's addresses. It is a normal on the
*unconstrained* space, pushed through NumPyro's bijection onto each
latent's support (``biject_to``), so a positive, interval or simplex latent
needs no work from the user; densities carry the Jacobian. The family reads
its parameters from ``params[name]`` (``name="guide"`` by default), so one
``params`` pytree can hold the model's and the guide's parameters.
"""

import functools
import itertools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from numpyro.distributions import constraints
from numpyro.distributions.transforms import ReshapeTransform, biject_to

import ppl
from ppl import dist
from ppl.inference import diagnostics
from ppl.transforms import unconstrain

__all__ = ["Latent", "latent_sites", "NormalFamily", "mean_field", "full_rank", "amortized"]


class Latent(NamedTuple):
    """One latent choice: its address, value shape and the support of its
    elements, onto which the family pushes its normal (``biject_to``)."""

    address: tuple
    shape: tuple
    support: Any

    @property
    def transform(self):
        return biject_to(self.support)

    @property
    def unconstrained_shape(self):
        return tuple(self.transform.inverse_shape(self.shape))

    @property
    def size(self):
        return int(np.prod(self.unconstrained_shape, dtype=int))


def latent_sites(model, args, observations, supports=None):
    """The latent (unobserved) choices of ``model`` run on ``args``, in the
    order the model makes them, with the support of their elements (found by
    ``ppl.transforms.unconstrain``). A normal family needs one support per
    latent: ``supports`` (address -> NumPyro constraint) gives it where it
    changes with other choices or across the elements of a vmap.

    >>> @ppl.gen
    ... def model():
    ...     scale = ppl.sample("scale", dist.HalfNormal(1.0))
    ...     ppl.sample("y", dist.Normal(0.0, scale))
    >>> [(l.address, l.shape, str(l.support)) for l in vi.latent_sites(model, (), {"y": 1.0})]
    [(('scale',), (), 'Positive(lower_bound=0.0)')]
    """
    given = {ppl.choicemap.as_path(a): s for a, s in (supports or {}).items()}
    target = unconstrain(model, args, observations)
    latents = []
    for latent, support in zip(target.latents, target.fixed_supports()):
        support = given.get(latent.address, support)
        if support is None:
            name = ppl.errors.format_address(latent.address)
            raise TypeError(
                f"address {name!r}: its support changes with other random choices or across the elements of a "
                f"vmap or scan, and a normal family needs one support per latent: pass supports={{{name!r}: constraint}}"
            )
        latents.append(Latent(latent.address, latent.shape, support))
    return latents


class NormalFamily(ppl.GenerativeFunction):
    """A (mean-field or full-rank) normal family on the unconstrained space of
    ``latents``. Build it with ``mean_field``, ``full_rank`` or ``amortized``."""

    def __init__(self, latents, kind, name, network_outputs=None):
        self.latents, self.kind, self.name = tuple(latents), kind, name
        self.dimension = sum(latent.size for latent in self.latents)
        self._gen = ppl.gen(self._program)
        self.num_network_outputs = 2 * self.dimension if kind == "amortized" else None

    def _edit(self, key, args, constraints, prev, selection, path):
        return self._gen._edit(key, args, constraints, prev, selection, path)

    def __repr__(self):
        return f"{self.kind}({', '.join(ppl.errors.format_address(l.address) for l in self.latents)})"

    def init_params(self, key=None, init_scale=0.1):
        """``{name: parameters}``: locations 0 (or uniform on (-2, 2) given a
        ``key``, as NumPyro's ``init_to_uniform``), scales ``init_scale``."""
        if self.kind == "amortized":
            raise TypeError("an amortized family's parameters are its network's: put the network in params[name]")
        loc = jnp.zeros(self.dimension) if key is None else jax.random.uniform(key, (self.dimension,), minval=-2, maxval=2)
        raw = jnp.full(self.dimension, _inverse_softplus(init_scale), jnp.result_type(float))
        if self.kind == "mean_field":
            return {self.name: {"loc": loc, "raw_scale": raw}}
        return {self.name: {"loc": loc, "raw_diag": raw, "off_diag": jnp.zeros((self.dimension, self.dimension))}}

    def sample(self, key, params, n, *args):
        """``n`` independent draws from the family with ``params`` (and, for
        an amortized family, its network's ``args``): a choice map whose
        leaves have a leading axis of size ``n``.

        >>> @ppl.gen
        ... def model(params):
        ...     ppl.sample("scale", dist.HalfNormal(1.0).expand([2]))
        >>> guide = vi.mean_field(model, (None,), {})
        >>> guide.sample(jax.random.key(0), guide.init_params(), 100)["scale"].shape
        (100, 2)
        """
        draws = jax.vmap(lambda k: self.simulate(k, (params, *args)).choices)(jax.random.split(key, n))
        # In the model's order (JAX's pytrees sort dict keys).
        return ppl.choicemap.unflatten({ppl.errors.format_address(l.address): ppl.get(draws, l.address) for l in self.latents})

    def summary(self, key, params, *args, num_draws=1000):
        """A ``Summary`` (``ppl.inference.diagnostics.summary``) of
        ``num_draws`` independent draws from the family, treated as one chain:
        means, sds, quantiles, the MCSE of each mean and the bulk and tail ESS
        (about ``num_draws``, since draws are independent). No R-hat column:
        it compares chains, and independent draws have nothing to diagnose.

        >>> @ppl.gen
        ... def model(params):
        ...     ppl.sample("mu", dist.Normal(0.0, 1.0))
        >>> guide = vi.mean_field(model, (None,), {})
        >>> params = {"guide": {"loc": jnp.array([3.0]), "raw_scale": jnp.array([0.0])}}
        >>> summary = guide.summary(jax.random.key(0), params)
        >>> summary.names, bool(abs(summary.table["mean"][0] - 3.0) < 0.1)
        (['mu'], True)
        """
        flat = ppl.choicemap.flatten(self.sample(key, params, num_draws, *args))
        draws = ppl.choicemap.unflatten({address: leaf[None] for address, leaf in flat.items()})  # one chain
        table = diagnostics.summary(draws)
        columns = {column: values for column, values in table.table.items() if column != "r_hat"}
        header = f"{self!r}: {num_draws} independent draws"
        return diagnostics.Summary(table.names, columns, table.warnings, None, header)

    def _program(self, params, *args):
        if self.kind == "amortized":
            out = params[self.name](*args)
            if jnp.shape(out) != (self.num_network_outputs,):
                raise ValueError(
                    f"{self!r}: the network must return a vector of {self.num_network_outputs} numbers "
                    f"(locations then raw scales), got shape {jnp.shape(out)}"
                )
            loc, scale = out[: self.dimension], jax.nn.softplus(out[self.dimension :])
            return self._sample_diagonal(loc, scale)
        own = params[self.name]
        if self.kind == "mean_field":
            return self._sample_diagonal(own["loc"], jax.nn.softplus(own["raw_scale"]))
        tril = jnp.tril(own["off_diag"], -1) + jnp.diag(jax.nn.softplus(own["raw_diag"]))
        return self._sample_full(own["loc"], tril)

    def _sample_diagonal(self, loc, scale):
        draws, start = [], 0
        for latent in self.latents:
            stop = start + latent.size
            shape = latent.unconstrained_shape
            base = dist.Normal(loc[start:stop].reshape(shape), scale[start:stop].reshape(shape)).to_event(len(shape))
            draws.append((latent.address, lambda name, d=_pushed(base, latent): ppl.sample(name, d)))
            start = stop
        return _sample_nested(draws)

    def _sample_full(self, loc, tril):
        """Block by block: u_b | u_<b is normal with mean loc_b + L_b,<b eps_<b
        and Cholesky factor L_bb, where eps = L^-1 (u - loc) of earlier blocks."""
        draws, start, unconstrained = [], 0, []

        def draw(name, latent, start, stop):
            mean = loc[start:stop]
            if start:
                eps = solve_triangular(tril[:start, :start], jnp.concatenate(unconstrained) - loc[:start], lower=True)
                mean = mean + tril[start:stop, :start] @ eps
            base = dist.MultivariateNormal(mean, scale_tril=tril[start:stop, start:stop])
            value = ppl.sample(name, _pushed(base, latent, flat=True))
            unconstrained.append(latent.transform.inv(value).reshape(-1))
            return value

        for latent in self.latents:
            stop = start + latent.size
            draws.append((latent.address, functools.partial(draw, latent=latent, start=start, stop=stop)))
            start = stop
        return _sample_nested(draws)


def _sample_nested(draws, depth=0):
    """Run ``draw(name)`` for each ``(address, draw)`` in order; the latents of
    one submodel (consecutive, sharing a prefix) are drawn inside one nested
    generative function at that prefix, as the model made them."""
    values = {}
    for head, group in itertools.groupby(draws, key=lambda item: item[0][depth]):
        group = list(group)
        if len(group) == 1 and len(group[0][0]) == depth + 1:
            values[head] = group[0][1](head)
        else:
            inner = ppl.gen(lambda group=group: _sample_nested(group, depth + 1))
            values[head] = ppl.sample(head, inner())
    return values


def _pushed(base, latent, flat=False):
    parts = []
    if flat and latent.unconstrained_shape != (latent.size,):
        parts.append(ReshapeTransform(latent.unconstrained_shape, (latent.size,)))
    if not isinstance(latent.support, type(constraints.real)) and not _is_real_vector(latent.support):
        parts.append(latent.transform)
    return dist.TransformedDistribution(base, parts) if parts else base


def _is_real_vector(support):
    return isinstance(support, constraints.independent) and isinstance(support.base_constraint, type(constraints.real))


def _inverse_softplus(x):
    return float(np.log(np.expm1(x)))


def mean_field(model, args, observations, name="guide", supports=None):
    """A mean-field normal family for ``model``'s latents (given ``args`` and
    ``observations``, which fix their shapes).

    >>> @ppl.gen
    ... def model(params):
    ...     rate = ppl.sample("rate", dist.Gamma(2.0, 1.0))
    ...     ppl.sample("count", dist.Poisson(rate))
    >>> guide = vi.mean_field(model, (None,), {"count": 3})
    >>> params = guide.init_params()
    >>> bool(guide.simulate(jax.random.key(0), (params,)).choices["rate"] > 0)  # positive, by construction
    True
    """
    return NormalFamily(latent_sites(model, args, observations, supports), "mean_field", name)


def full_rank(model, args, observations, name="guide", supports=None):
    """A full-rank normal family (all latents correlated) on the unconstrained
    space of ``model``'s latents."""
    return NormalFamily(latent_sites(model, args, observations, supports), "full_rank", name)


def amortized(model, args, observations, name="encoder", supports=None):
    """A mean-field normal family whose parameters come from a network:
    ``params[name](*args)`` (a flax nnx module, or any function) returns
    ``num_network_outputs`` numbers, locations then raw scales (softplus)."""
    return NormalFamily(latent_sites(model, args, observations, supports), "amortized", name)
