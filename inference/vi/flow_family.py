"""Normalizing-flow families (Rezende and Mohamed, 2015): a standard normal
on the model's unconstrained latent space, pushed through flow layers
(``flow_layers.py``), then onto each latent's support as the normal families
are (``biject_to``).

A flow draws all latents jointly, so the family makes one random choice of
its own, at ``(name,)`` (``"guide"``): a vector that carries the flow's
output and its log density, computed in the forward pass. Fresh draws thus
never run the flow backwards; a given point (``assess``) does. Gradient
strategies address that choice by the family's name. Every objective takes
a flow family as it takes a normal one.

Fast path gradients (Vaitl et al., 2024): with ``path=True`` (what
``vi.stl_elbo`` asks for) the draw's log density carries, alongside its
value, the gradient grad_x log q(x) at held parameters, computed by the
forward recursion of each layer's ``score_forward``; its derivative with
respect to the parameters then flows only through x, as the
sticking-the-landing estimator needs, with no second pass through the flow.
"""

import jax
import jax.numpy as jnp
from flax import nnx
from numpyro.distributions import Distribution, constraints

import ppl
from ppl.core import Edit, GenerativeFunction
from ppl.errors import AddressError, MissingValueError, format_address
from ppl.inference.vi.families import NormalFamily, latent_sites
from ppl.inference.vi.flow_layers import layer_factory
from ppl.sample_primitive import bind_sample

__all__ = ["Flow", "FlowFamily", "flow", "amortized_flow"]

sg = jax.lax.stop_gradient


class Flow(nnx.Module):
    """Flow layers on R^``dimension`` over a standard normal base.

    >>> from flax import nnx
    >>> flow = vi.Flow(2, [vi.AffineCoupling] * 2, rngs=nnx.Rngs(0))
    >>> x, log_q = flow.sample_with_log_prob(jnp.array([0.5, -1.0]))
    >>> bool(jnp.isclose(log_q, flow.log_prob(x)))
    True
    """

    def __init__(self, dimension, layers, context_size=0, *, rngs):
        if not layers:
            raise ValueError("a flow needs at least one layer (layers=[vi.AffineCoupling] * 4, say)")
        self.dimension, self.context_size = dimension, context_size
        self.layers = nnx.List([layer_factory(layer)(dimension, i, context_size, rngs=rngs) for i, layer in enumerate(layers)])

    def forward(self, noise, context=None):
        """``(x, log |det dx/dnoise|)``."""
        total = jnp.zeros((), noise.dtype)
        for layer in self.layers:
            noise, log_det = layer.forward(noise, context)
            total = total + log_det
        return noise, total

    def inverse(self, x, context=None):
        """``(noise, log |det dnoise/dx|)``."""
        total = jnp.zeros((), x.dtype)
        for layer in reversed(self.layers):
            x, log_det = layer.inverse(x, context)
            total = total + log_det
        return x, total

    def log_prob(self, x, context=None):
        """log q(x), through the inverse."""
        noise, log_det = self.inverse(x, context)
        return _standard_normal_log_prob(noise) + log_det

    def sample_with_log_prob(self, noise, context=None, path=False):
        """``(x, log q(x))`` from base noise, in one forward pass. ``path``:
        log q's derivative in the parameters flows only through x (the score
        grad_x log q comes from the layers' forward recursion)."""
        if not path:
            x, log_det = self.forward(noise, context)
            return x, _standard_normal_log_prob(noise) - log_det
        x, log_det, score = noise, jnp.zeros((), noise.dtype), -noise
        for layer in self.layers:
            y, layer_log_det = layer.forward(x, context)
            score = layer.score_forward(sg(x), sg(y), score, sg(context) if context is not None else None)
            x, log_det = y, log_det + layer_log_det
        log_q = sg(_standard_normal_log_prob(noise) - log_det)
        return x, log_q + jnp.dot(sg(score), x - sg(x))


    def inverse_with_score(self, x, target_score, context=None):
        """``(noise, log |det dnoise/dx|, h)``: the inverse pass, and along it
        (parameters held) the gradient at ``noise`` of log p~ - log N, where
        p~(noise) = p(T(noise)) |det J| pulls the target back to the base and
        ``target_score`` is grad_x log p(x). For maximum-likelihood path
        gradients: h is zero where the flow maps the base onto the target."""
        total, score = jnp.zeros((), x.dtype), target_score
        held_context = sg(context) if context is not None else None
        for layer in reversed(self.layers):
            before, log_det = layer.inverse(x, context)
            score = layer.score_inverse(sg(before), sg(x), score, held_context)
            x, total = before, total + log_det
        return x, total, score + sg(x)


def _standard_normal_log_prob(noise):
    return -0.5 * jnp.sum(noise**2) - 0.5 * noise.shape[-1] * jnp.log(2 * jnp.pi).astype(noise.dtype)


class FlowDraw(Distribution):
    """The family's one choice: ``[x, log q(x)]`` (``x`` the flow's output on
    R^d). Its ``log_prob`` is the exact log q of ``x`` through the inverse, so
    score-function strategies are right too."""

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = True
    pytree_data_fields = ("flow", "context")
    pytree_aux_fields = ("dimension", "path")

    def __init__(self, flow, context, dimension, path=False):
        self.flow, self.context, self.dimension, self.path = flow, context, dimension, path
        super().__init__(batch_shape=(), event_shape=(dimension + 1,), validate_args=False)

    def sample(self, key, sample_shape=()):
        dtype = jnp.result_type(float)
        noise = jax.random.normal(key, tuple(sample_shape) + (self.dimension,), dtype)
        one = lambda n: jnp.append(*self.flow.sample_with_log_prob(n, self.context, self.path))
        for _ in sample_shape:
            one = jax.vmap(one)
        return one(noise)

    def rsample(self, key, sample_shape=()):
        return self.sample(key, sample_shape)

    def log_prob(self, value):
        one = lambda v: self.flow.log_prob(v[: self.dimension], self.context)
        for _ in value.shape[:-1]:
            one = jax.vmap(one)
        return one(value)


class FlowFamily(GenerativeFunction):
    """A flow on the unconstrained space of ``latents``; build it with
    ``vi.flow`` or ``vi.amortized_flow``."""

    def __init__(self, latents, layers, name, amortized=False, context_size=None, path=False):
        self.latents, self.layers, self.name = tuple(latents), tuple(layer_factory(l) for l in layers), name
        self.amortized, self.context_size, self.path = amortized, context_size, path
        self.dimension = sum(latent.size for latent in self.latents)
        if not self.latents:
            raise ValueError("a flow family needs at least one latent choice; the model has none (all observed?)")
        self.joint_addresses = tuple(latent.address for latent in self.latents)  # scaled together or not at all

    def __repr__(self):
        kind = "amortized_flow" if self.amortized else "flow"
        return f"{kind}({', '.join(format_address(l.address) for l in self.latents)})"

    def with_path_gradient(self):
        """The same family whose draws give path (sticking-the-landing) gradients."""
        return FlowFamily(self.latents, self.layers, self.name, self.amortized, self.context_size, path=True)

    def init_params(self, key=None):
        """``{name: Flow}``, starting at the identity map on top of a standard
        normal (every conditioned layer starts at the identity). An amortised
        flow's parameters are ``{name: {"encoder": network, "flow": Flow}}``:
        build them with ``init_flow`` and your encoder."""
        if self.amortized:
            raise TypeError(
                f"{self!r}: an amortised flow's parameters are {{'encoder': network, 'flow': guide.init_flow(key)}}"
            )
        return {self.name: self.init_flow(key)}

    def init_flow(self, key=None):
        """A fresh ``Flow`` of this family's layers and dimension."""
        seed = 0 if key is None else int(jax.random.randint(key, (), 0, 2**31 - 1))
        return Flow(self.dimension, list(self.layers), self.context_size or 0, rngs=nnx.Rngs(seed))

    def sample(self, key, params, n, *args):
        """``n`` independent draws (a choice map with a leading axis ``n``)."""
        return NormalFamily.sample(self, key, params, n, *args)

    def summary(self, key, params, *args, num_draws=1000):
        """As ``NormalFamily.summary``: a diagnostics table of independent draws."""
        return NormalFamily.summary(self, key, params, *args, num_draws=num_draws)

    def _distribution(self, args):
        if not args:
            raise TypeError(f"{self!r} takes (params, *args): params[{self.name!r}] holds its flow")
        params, rest = args[0], args[1:]
        own = params[self.name]
        if not self.amortized:
            return FlowDraw(_as_flow(own, self), None, self.dimension, self.path)
        context = own["encoder"](*rest)
        if jnp.shape(context) != (self.context_size,):
            raise ValueError(
                f"{self!r}: the encoder must return a context vector of shape ({self.context_size},), "
                f"got shape {jnp.shape(context)}"
            )
        return FlowDraw(_as_flow(own["flow"], self), context, self.dimension, self.path)

    def _edit(self, key, args, constraints, prev, selection, path):
        distribution = self._distribution(args)
        keep = prev is not None and constraints is None and not _selects_any(selection, self.latents)
        if prev is not None and constraints is None and not keep and not _selects_all(selection, self.latents):
            raise AddressError(
                f"{self!r} draws its latents jointly: select all of them or none, got a selection of some"
            )
        given = prev.choices if keep else constraints  # None: a fresh joint draw
        if given is not None:
            values = given
            log_q = kept = self._log_q(distribution, given, path)
        else:
            draw = bind_sample(key, distribution, path + (self.name,))
            values, jacobian = self._constrain(draw[:-1])
            log_q, kept = draw[-1] - jacobian, 0.0
        values = ppl.choicemap.unflatten({format_address(l.address): ppl.get(values, l.address) for l in self.latents})
        used = jax.tree.map(lambda _: True, values)
        per_site = jax.tree.map(lambda _: jnp.zeros((), jnp.result_type(float)), values)
        first = self.latents[0].address  # the joint density, all at the first latent
        per_site = ppl.choicemap.unflatten({**ppl.choicemap.flatten(per_site), format_address(first): log_q})
        reverse = self._log_q(distribution, prev.choices, path) if prev is not None and not keep else 0.0
        return Edit(values, used, per_site, values, log_q, kept, reverse)

    def _log_q(self, distribution, choices, path):
        unconstrained, jacobian = self._unconstrain(choices, path)
        return distribution.log_prob(jnp.append(unconstrained, 0.0)) - jacobian

    def _constrain(self, flat):
        """Split the flow's output by latent and push each onto its support:
        ``(values, sum of log |det| of the bijections)``."""
        values, jacobian, start = {}, 0.0, 0
        for latent in self.latents:
            stop = start + latent.size
            u = flat[start:stop].reshape(latent.unconstrained_shape)
            transform = latent.transform
            value = transform(u)
            jacobian = jacobian + jnp.sum(transform.log_abs_det_jacobian(u, value))
            values[format_address(latent.address)] = value
            start = stop
        return ppl.choicemap.unflatten(values), jacobian

    def _unconstrain(self, choices, path):
        pieces, jacobian = [], 0.0
        for latent in self.latents:
            value = ppl.get(choices, latent.address)
            name = format_address(path + latent.address)
            if value is None:
                raise MissingValueError(f"no value for address {name!r}: {self!r} needs every latent it draws")
            value = jnp.asarray(value)
            if value.shape != tuple(latent.shape):
                raise ValueError(f"address {name!r}: expected shape {tuple(latent.shape)}, got {value.shape}")
            u = latent.transform.inv(value)
            jacobian = jacobian + jnp.sum(latent.transform.log_abs_det_jacobian(u, value))
            pieces.append(u.reshape(-1))
        return jnp.concatenate(pieces), jacobian


def _as_flow(own, family):
    if not isinstance(own, Flow):
        raise TypeError(
            f"{family!r}: params[{family.name!r}] must be a vi.Flow (guide.init_params()), got {type(own).__name__}"
        )
    if own.dimension != family.dimension:
        raise ValueError(f"{family!r}: the flow is on R^{own.dimension}, the latents need R^{family.dimension}")
    return own


def _selects_any(selection, latents):
    return selection is not None and any(selection.contains(l.address) for l in latents)


def _selects_all(selection, latents):
    return selection is not None and all(selection.contains(l.address) for l in latents)


def flow(model, args, observations, layers, name="guide", supports=None):
    """A normalizing-flow family for ``model``'s latents: a standard normal on
    their unconstrained space pushed through ``layers`` (flow layer classes,
    or ``functools.partial`` of them; see ``vi.AffineCoupling`` and the
    others), then onto each latent's support.

    >>> @ppl.gen
    ... def model(params):
    ...     scale = ppl.sample("scale", dist.HalfNormal(1.0))
    ...     ppl.sample("x", dist.Normal(0.0, scale).expand([2]))
    >>> guide = vi.flow(model, (None,), {}, layers=[vi.AffineCoupling] * 4)
    >>> params = guide.init_params()
    >>> trace = guide.simulate(jax.random.key(0), (params,))
    >>> bool(trace.choices["scale"] > 0), trace.choices["x"].shape
    (True, (2,))
    >>> bool(jnp.isclose(guide.assess(trace.choices, (params,))[0], trace.log_density, atol=1e-4))
    True
    """
    return FlowFamily(latent_sites(model, args, observations, supports), layers, name)


def amortized_flow(model, args, observations, layers, context_size, name="encoder", supports=None):
    """A conditional flow for amortised inference (a VAE's encoder): the
    family's parameters are ``{"encoder": network, "flow": Flow}``; the network
    maps the family's arguments (after ``params``) to a context vector of
    ``context_size`` numbers, which every coupling and autoregressive layer's
    conditioner reads. Build the flow with ``guide.init_flow(key)``.

    >>> @ppl.gen
    ... def model(params, x):
    ...     z = ppl.sample("z", dist.Normal(0.0, 1.0))
    ...     ppl.sample("x", dist.Normal(z, 0.5))
    >>> guide = vi.amortized_flow(model, (None, 0.0), {"x": 0.0}, [vi.AffineCoupling] * 2, context_size=3)
    >>> encoder = lambda x: jnp.stack([x, x**2, 1.0])  # any function or nnx module of the arguments
    >>> params = {"encoder": {"encoder": encoder, "flow": guide.init_flow()}}
    >>> guide.sample(jax.random.key(0), params, 5, 1.5)["z"].shape  # draws of z given x = 1.5
    (5,)
    """
    latents = latent_sites(model, args, observations, supports)
    return FlowFamily(latents, layers, name, amortized=True, context_size=context_size)
