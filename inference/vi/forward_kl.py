"""Training a family on draws from the target: maximum likelihood, i.e.
minimising the forward KL(p || q), with the path gradient of Vaitl et al.
(2024, section 4) for flows when the target's density is known.
"""

import jax
import jax.numpy as jnp
from jax import lax

import ppl
from ppl.inference.vi.constructs import density
from ppl.inference.vi.flow_family import FlowFamily, _standard_normal_log_prob
from ppl.inference.vi.objectives import Objective

__all__ = ["forward_kl"]

sg = lax.stop_gradient


def forward_kl(guide, model=None, observations=None, strategies=None):
    """Maximise E_p[log q(x)] (= -KL(p || q) up to a constant) over draws x
    from the target: the objective's first argument is a choice map of the
    guide's latents with a leading axis (one entry per draw; ``vi.fit`` with
    ``batch_size`` takes minibatches of it), then the guide's arguments.

    Without ``model``: the maximum-likelihood gradient, for any family. With
    ``model`` (and its ``observations``), for a flow: the path gradient,
    which pulls the target back to the base and reads its score (so the
    gradient is zero, not just zero on average, once the flow is exact):
    same value, lower variance.

    >>> @ppl.gen
    ... def model(params):
    ...     ppl.sample("z", dist.Normal(3.0, 2.0))
    >>> guide = vi.flow(model, (None,), {}, layers=[vi.AffineCoupling] * 2)
    >>> draws = {"z": 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (512,))}
    >>> objective = vi.forward_kl(guide, model, {})
    >>> result = vi.fit(objective, guide.init_params(), optax.adam(0.05), 300, (draws,),
    ...                 key=jax.random.key(1), batch_size=128, progress=False)
    >>> mean = guide.sample(jax.random.key(2), result.params, 4000)["z"].mean()
    >>> bool(abs(mean - 3.0) < 0.2)
    True
    """
    if model is not None and not isinstance(guide, FlowFamily):
        raise TypeError(f"forward_kl: the path gradient (model=...) needs a flow family (vi.flow), got {guide!r}")
    if model is not None and observations is None:
        raise TypeError("forward_kl: with model=, pass its observations= (a choice map; {} if none)")

    def one(params, draw, args):
        if model is None:
            return density(guide, _latents(guide, draw), (params, *args))
        return _path_term(guide, model, observations, params, draw, args)

    def program(key, params, draws, args, scales):
        return jnp.mean(jax.vmap(lambda draw: one(params, draw, args))(draws))

    return Objective(program, strategies, name=f"forward_kl({guide})")


def _latents(guide, draw):
    latents = getattr(guide, "latents", None)
    if latents is None:
        return draw
    return ppl.choicemap.unflatten({ppl.errors.format_address(l.address): ppl.get(draw, l.address) for l in latents})


def _path_term(guide, model, observations, params, draw, args):
    """log q(x), whose gradient is sg(h) . d noise / d params with h the
    base-space score of the pulled-back target (parameters held)."""
    distribution = guide._distribution((params, *args))
    flow, context = distribution.flow, distribution.context
    unconstrained, jacobian = guide._unconstrain(draw, ())

    def log_target(u):
        values, log_det = guide._constrain(u)
        return density(model, ppl.merge(values, observations), (sg(params), *args)) + log_det

    target_score = jax.grad(log_target)(sg(unconstrained))
    noise, log_det, score = flow.inverse_with_score(unconstrained, target_score, context)
    log_q = _standard_normal_log_prob(noise) + log_det - jacobian
    return sg(log_q) - jnp.dot(sg(score), noise - sg(noise))
