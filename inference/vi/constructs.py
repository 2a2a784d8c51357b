"""The constructs objectives are written with: ``sim``, ``density``,
``marginal`` and ``normalize`` (programmable VI, Becker et al., PLDI 2024).

A *family* is anything ``sim`` and ``density`` accept: a generative function
(exact densities), a ``Marginal`` or a ``Normalized`` (estimated densities).
The estimates go in the direction that keeps bounds bounds: ``density``'s
``exp`` is an unbiased estimate of the density, and ``sim``'s ``exp(-.)`` of
the reciprocal density at the value it drew, so ``E[log p - log q]`` with
either side estimated stays a lower bound of the log marginal likelihood.

Every random choice goes through ppl's generative functions, so ADEV sees
them all: an objective written with these constructs gets unbiased gradients.
"""

import jax
import jax.numpy as jnp

import ppl
from ppl import dist

__all__ = ["sim", "density", "marginal", "normalize", "Marginal", "Normalized", "logmeanexp"]


def logmeanexp(log_values, axis=0):
    """``log(mean(exp(log_values)))``, stably."""
    return jax.nn.logsumexp(log_values, axis=axis) - jnp.log(jnp.shape(log_values)[axis])


def sim(family, key, args, scale=None):
    """Draw ``(choices, log_density)`` from a family.

    ``scale`` maps addresses to factors that multiply those choices' log
    densities (minibatch rescaling of per-datapoint latents).

    >>> @ppl.gen
    ... def guide(loc):
    ...     ppl.sample("z", dist.Normal(loc, 1.0))
    >>> choices, log_q = vi.sim(guide, jax.random.key(0), (0.0,))
    >>> bool(jnp.isclose(log_q, dist.Normal(0.0, 1.0).log_prob(choices["z"])))
    True
    """
    if isinstance(family, ppl.GenerativeFunction):
        trace = family.simulate(key, args)
        return trace.choices, _rescaled(family, trace.choices, args, trace.log_density, scale)
    _no_scale(family, scale)
    return family.sim(key, args)


def density(family, choices, args, key=None, scale=None):
    """The log density of ``choices`` under a family (an estimate, with ``key``,
    for ``Marginal`` and ``Normalized``). ``scale`` as in ``sim``.

    >>> @ppl.gen
    ... def model():
    ...     ppl.sample("z", dist.Normal(0.0, 1.0))
    >>> round(float(vi.density(model, {"z": 0.0}, ())), 4)
    -0.9189
    """
    if isinstance(family, ppl.GenerativeFunction):
        log_density, _ = family.assess(choices, args)
        return _rescaled(family, choices, args, log_density, scale)
    _no_scale(family, scale)
    if key is None:
        raise TypeError(f"density of a {type(family).__name__} is an estimate: pass key=")
    return family.density(key, choices, args)


def _rescaled(gf, choices, args, log_density, scale):
    """``log_density`` with the choices under each address of ``scale`` counted
    ``factor`` times."""
    if not scale:
        return log_density
    joint = getattr(gf, "joint_addresses", None)  # a flow: one density for all its latents
    if joint is not None:
        return _rescaled_joint(gf, joint, log_density, scale)
    per_choice = ppl.site_log_densities(gf, choices, args)
    for address, factor in scale.items():
        part = ppl.get(per_choice, address)
        if part is not None:
            log_density = log_density + (factor - 1.0) * _total(part)
    return log_density


def _rescaled_joint(gf, addresses, log_density, scale):
    factors = {ppl.choicemap.as_path(a): f for a, f in scale.items()}
    mine = {address: factors[address] for address in addresses if address in factors}
    if not mine:
        return log_density
    if len(mine) < len(addresses) or len(set(mine.values())) > 1:
        raise ValueError(
            f"{gf!r} has one joint density for all its latents: scale them all by one factor or none, "
            f"got {({ppl.errors.format_address(a): f for a, f in mine.items()})}"
        )
    return next(iter(mine.values())) * log_density


def _total(per_choice):
    """The sum of a choice map of log densities."""
    return sum(jnp.sum(x) for x in jax.tree.leaves(per_choice))


def _no_scale(family, scale):
    if scale:
        raise TypeError(f"scale= applies to generative functions, not to a {type(family).__name__}")


class Marginal:
    """The marginal of ``gf`` on the ``selection``'s addresses; the other
    addresses are integrated out by importance sampling with ``proposal``
    (a generative function of ``(selected_choices, *args)``; ``None``: the
    model's own prior, through ``generate``) and ``num_particles`` particles.
    Build it with ``marginal``."""

    def __init__(self, gf, selection, proposal, num_particles):
        if num_particles < 1:
            raise ValueError(f"marginal: num_particles must be >= 1, got {num_particles}")
        self.gf, self.selection, self.proposal, self.num_particles = gf, selection, proposal, num_particles

    def sim(self, key, args):
        """Draw the selected choices; the log weight's ``exp(-.)`` estimates
        1 / marginal density without bias when the rest is the exact
        conditional (the first particle is the one drawn with them)."""
        key_joint, key_rest = jax.random.split(key)
        trace = self.gf.simulate(key_joint, args)
        selected = ppl.filter_choices(trace.choices, self.selection)
        rest = _complement(trace.choices, self.selection)
        first = trace.log_density - self._proposal_density(selected, rest, trace, args)
        if self.num_particles == 1:
            return selected, first
        others = self._weights(key_rest, selected, args, self.num_particles - 1)
        return selected, logmeanexp(jnp.concatenate([first[None], others]))

    def density(self, key, choices, args):
        """An estimate whose ``exp`` is unbiased for the marginal density."""
        return logmeanexp(self._weights(key, choices, args, self.num_particles))

    def _weights(self, key, selected, args, n):
        def one(k):
            if self.proposal is None:
                _, log_weight = self.gf.generate(k, selected, args)
                return log_weight
            proposal = self.proposal.simulate(k, (selected, *args))
            log_joint, _ = self.gf.assess(ppl.merge(selected, proposal.choices), args)
            return log_joint - proposal.log_density

        return ppl.vmap_particles(one, n)(key)

    def _proposal_density(self, selected, rest, trace, args):
        if self.proposal is None:  # generate's proposal is the prior of the rest
            per_choice = ppl.site_log_densities(self.gf, trace.choices, args)
            return _total(_complement(per_choice, self.selection))
        log_q, _ = self.proposal.assess(rest, (selected, *args))
        return log_q


def marginal(gf, addresses, proposal=None, num_particles=1):
    """The marginal of ``gf`` on ``addresses`` (a ``ppl.Selection``, or address
    strings), usable as a variational family (hierarchical VI) or as a target.

    >>> @ppl.gen
    ... def joint():
    ...     u = ppl.sample("u", dist.Normal(0.0, 1.0))
    ...     ppl.sample("z", dist.Normal(u, 1.0))
    >>> z_marginal = vi.marginal(joint, "z", num_particles=2000)
    >>> estimate = vi.density(z_marginal, {"z": 1.0}, (), key=jax.random.key(0))
    >>> bool(abs(estimate - dist.Normal(0.0, 2**0.5).log_prob(1.0)) < 0.05)  # z ~ N(0, 2)
    True
    """
    selection = addresses if isinstance(addresses, ppl.Selection) else ppl.select(*_as_tuple(addresses))
    return Marginal(gf, selection, proposal, num_particles)


class Normalized:
    """Sampling importance resampling: ``model`` given ``observations``,
    approximated with ``num_particles`` draws from ``proposal`` (a generative
    function of the same arguments; ``None``: the model's prior). Build it with
    ``normalize``."""

    def __init__(self, model, observations, proposal, num_particles):
        if num_particles < 1:
            raise ValueError(f"normalize: num_particles must be >= 1, got {num_particles}")
        self.model, self.observations = model, observations
        self.proposal, self.num_particles = proposal, num_particles

    def sim(self, key, args):
        """One particle, resampled by weight; its log weight is
        ``log p(z, obs) - log Z_hat``, so the ELBO of this family against the
        model is the IWELBO of the proposal."""
        key_particles, key_pick = jax.random.split(key)
        latents, log_weights = ppl.vmap_particles(lambda k: self._particle(k, args), self.num_particles)(key_particles)
        # The resampling index is a ppl choice, so ADEV differentiates through it.
        index = ppl.as_gen(dist.Categorical(logits=log_weights)).simulate(key_pick, ()).choices
        chosen = jax.tree.map(lambda x: x[index], latents)
        return chosen, self._log_joint(chosen, args) - logmeanexp(log_weights)

    def density(self, key, latents, args):
        """Conditional SIR: ``latents`` is one of the particles; ``exp`` of the
        result is unbiased for the SIR family's density at ``latents``."""
        log_joint = self._log_joint(latents, args)
        first = log_joint - self._proposal_density(latents, args)
        if self.num_particles == 1:
            return log_joint - first
        _, others = ppl.vmap_particles(lambda k: self._particle(k, args), self.num_particles - 1)(key)
        return log_joint - logmeanexp(jnp.concatenate([first[None], others]))

    def _particle(self, key, args):
        if self.proposal is None:
            trace, log_weight = self.model.generate(key, self.observations, args)
            return _complement(trace.choices, _selection_of(self.observations)), log_weight
        proposal = self.proposal.simulate(key, args)
        return proposal.choices, self._log_joint(proposal.choices, args) - proposal.log_density

    def _log_joint(self, latents, args):
        log_joint, _ = self.model.assess(ppl.merge(latents, self.observations), args)
        return log_joint

    def _proposal_density(self, latents, args):
        if self.proposal is None:
            choices = ppl.merge(latents, self.observations)
            per_choice = ppl.site_log_densities(self.model, choices, args)
            return _total(ppl.filter_choices(per_choice, _selection_of(latents)))
        log_q, _ = self.proposal.assess(latents, args)
        return log_q


def normalize(model, observations, proposal=None, num_particles=1):
    """The posterior of ``model`` given ``observations``, by sampling importance
    resampling with ``num_particles`` particles from ``proposal``.

    >>> @ppl.gen
    ... def model():
    ...     z = ppl.sample("z", dist.Normal(0.0, 1.0))
    ...     ppl.sample("y", dist.Normal(z, 1.0))
    >>> posterior = vi.normalize(model, {"y": 2.0}, num_particles=1000)
    >>> zs = jax.vmap(lambda k: vi.sim(posterior, k, ())[0]["z"])(jax.random.split(jax.random.key(0), 400))
    >>> bool(abs(zs.mean() - 1.0) < 0.15)  # the exact posterior is N(1, 1/2)
    True
    """
    return Normalized(model, ppl.merge(observations), proposal, num_particles)


def _as_tuple(addresses):
    return (addresses,) if isinstance(addresses, str) else tuple(addresses)


def _selection_of(choices):
    return ppl.select(*ppl.flatten(choices).keys())


def _complement(choices, selection):
    return ppl.unflatten({a: v for a, v in ppl.flatten(choices).items() if not selection.contains(a)})
