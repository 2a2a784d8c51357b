"""Importance sampling: likelihood weighting or a custom proposal."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

import ppl
from ppl.inference import diagnostics
from ppl.jit import jit_gfi
from ppl._jax import sub_jaxprs
from ppl.transforms.dependence import split_by_dependence

__all__ = ["importance", "ImportanceResult", "intermediate_bytes", "CHUNK_BYTES"]


@jax.tree_util.register_pytree_node_class
class ImportanceResult:
    """Weighted particles: ``traces`` (a vectorised trace: a leading particle
    axis on every choice) and unnormalised ``log_weights``.

    Choices that are the same for every particle (the observations, and
    anything computed from the arguments alone) are stored once; ``traces``
    broadcasts them when asked, ``estimate`` and ``resample`` never need to.
    The joint log density of each particle is not stored either (it costs
    about a tenth of the run): ``traces`` and ``resample`` compute it, for the
    particles they return, with the model's ``assess``. ``observed`` holds
    the addresses (tuples) of the observations, which ``latent_choices``
    and ``summary`` leave out.
    """

    def __init__(self, particles, log_weights, args, shared, model, observed=()):
        self.particles = particles  # a Trace without args or log density; shared leaves have no particle axis
        self.log_weights = log_weights
        self.args = args
        self.shared = shared  # per leaf of `particles`: stored once?
        self.model = model
        self.observed = observed

    def tree_flatten(self):
        # A Trace keeps the Python values among the arguments static.
        children = (self.particles, self.log_weights, ppl.Trace(None, None, self.args, None))
        return children, (self.shared, self.model, self.observed)

    @classmethod
    def tree_unflatten(cls, static, children):
        particles, log_weights, holder = children
        return cls(particles, log_weights, holder.args, *static)

    @property
    def num_particles(self):
        return self.log_weights.shape[-1]

    def _broadcast(self, n, index=None):
        leaves, treedef = jax.tree.flatten(self.particles)
        out = [
            jnp.broadcast_to(leaf, (n,) + jnp.shape(leaf)) if shared else (leaf if index is None else leaf[index])
            for leaf, shared in zip(leaves, self.shared)
        ]
        particles = jax.tree.unflatten(treedef, out)
        log_density = jax.vmap(lambda choices: self.model.assess(choices, self.args)[0])(particles.choices)
        return ppl.Trace(particles.choices, particles.retval, self.args, log_density)

    @property
    def traces(self):
        """The particles as a vectorised ``ppl.Trace`` (shared choices broadcast)."""
        return self._broadcast(self.num_particles)

    @property
    def log_marginal_likelihood(self):
        """log (1/N sum_i w_i): its exponential is an unbiased estimate of p(observations)."""
        return logsumexp(self.log_weights) - jnp.log(self.num_particles)

    @property
    def normalized_weights(self):
        return jax.nn.softmax(self.log_weights)

    @property
    def ess(self):
        """Effective sample size (sum w)^2 / sum w^2."""
        return jnp.exp(2 * logsumexp(self.log_weights) - logsumexp(2 * self.log_weights))

    @property
    def latent_choices(self):
        """The particles' choices at the unobserved addresses, each with a
        leading particle axis (broadcast where stored once)."""
        n = self.num_particles
        return ppl.choicemap.unflatten(
            {a: jnp.broadcast_to(leaf, (n,) + jnp.shape(leaf)) if shared else leaf for a, (leaf, shared) in self._latents().items()}
        )

    def _latents(self):
        """``{address: (leaf, stored once?)}`` of the unobserved choices, in the choice map's order."""
        leaves, treedef = jax.tree.flatten(self.particles)
        choices, shared = self.particles.choices, jax.tree.unflatten(treedef, list(self.shared)).choices
        if not isinstance(choices, dict):  # a bare distribution's one choice, at the root
            return {} if self.observed else {"<root>": (choices, shared)}
        shared = ppl.choicemap.flatten(shared)
        observed = lambda path: any(path[: len(o)] == o for o in self.observed)
        flat = ppl.choicemap.flatten(choices)
        return {a: (leaf, shared[a]) for a, leaf in flat.items() if not observed(ppl.choicemap.as_path(a))}

    def summary(self):
        """A weighted ``Summary`` (``ppl.inference.diagnostics.summary`` with
        ``log_weights``) of the latent choices: self-normalised means, sds and
        quantiles, the MCSE of each mean, and Kish's ESS.

        >>> @ppl.gen
        ... def model():
        ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ...     return ppl.sample("y", dist.Normal(mu, 1.0))
        >>> result = ppl.inference.importance(jax.random.key(0), model, (), {"y": 1.0}, 10_000)
        >>> summary = result.summary()
        >>> summary.names, bool(abs(summary.table["mean"][0] - 0.5) < 0.05)
        (['mu'], True)
        """
        return diagnostics.summary(self.latent_choices, log_weights=self.log_weights)

    def __repr__(self):
        shape = lambda leaf, shared: list(jnp.shape(leaf)[0 if shared else 1 :])
        latents = [f"{a} {jnp.result_type(leaf).name}{shape(leaf, shared)}" for a, (leaf, shared) in self._latents().items()]
        if isinstance(self.log_weights, jax.core.Tracer):
            numbers = "traced"
        else:
            numbers = f"ESS {float(self.ess):.4g}, log marginal likelihood estimate {float(self.log_marginal_likelihood):.6g}"
        return f"ImportanceResult({self.num_particles} particles, {numbers}; latent choices: {', '.join(latents) or 'none'})"

    def estimate(self, fn):
        """Self-normalised estimate of E[fn(choices)] under the posterior.

        >>> @ppl.gen
        ... def model():
        ...     p = ppl.sample("p", dist.Beta(1.0, 1.0))
        ...     return ppl.sample("flips", dist.Bernoulli(p).expand([4]))
        >>> flips = {"flips": jnp.array([1, 1, 1, 0])}
        >>> result = ppl.inference.importance(jax.random.key(0), model, (), flips, 50_000)
        >>> bool(abs(result.estimate(lambda c: c["p"]) - 4 / 6) < 0.01)  # Beta(4, 2) mean
        True
        """
        choices_axes = self._axes().choices
        values = jax.vmap(fn, in_axes=(choices_axes,))(self.particles.choices)
        weights = self.normalized_weights.reshape((-1,) + (1,) * (jnp.ndim(values) - 1))
        return jnp.sum(weights * values, axis=0)

    def _axes(self):
        leaves, treedef = jax.tree.flatten(self.particles)
        return jax.tree.unflatten(treedef, [None if shared else 0 for shared in self.shared])

    def resample(self, key, n):
        """Sampling importance resampling: ``n`` traces drawn in proportion to the weights."""
        # Inverse-CDF draws, O(N + n log N). (jax.random.categorical with shape=(n,)
        # materialises n x N Gumbel noise: 4e8 floats for n = 1e5, N = 4e3.)
        index = jax.random.choice(key, self.num_particles, (n,), replace=True, p=self.normalized_weights)
        return self._broadcast(n, index)


def importance(key, model, args, observations, num_particles, proposal=None, proposal_args=(), chunk_size=None):
    """Importance sampling of ``model`` given ``observations``.

    Without ``proposal``, latent choices are drawn from the model (likelihood
    weighting). A ``proposal`` is a generative function over the latent
    addresses, run on ``proposal_args``; weights are then
    ``log p(latents, observations) - log q(latents)``. Particles are computed
    ``chunk_size`` at a time (by default as many as keep one particle
    program's intermediate values under ``CHUNK_BYTES``, 1 GiB, before XLA
    fuses them), so a million fit in memory and smaller runs are one chunk.

    >>> import jax, jax.numpy as jnp, ppl
    >>> from ppl import dist
    >>> @ppl.gen
    ... def model():
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     return ppl.sample("y", dist.Normal(mu, 1.0))
    >>> result = ppl.inference.importance(jax.random.key(0), model, (), {"y": 1.0}, 10_000)
    >>> bool(abs(result.estimate(lambda c: c["mu"]) - 0.5) < 0.05)
    True
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive Python int, got {num_particles!r}")
    ppl.validation.check_finite_arguments(args)
    observations = ppl.choicemap.to_arrays(observations)
    return _importance(model, key, observations, tuple(args), num_particles, proposal, tuple(proposal_args), chunk_size)


@jit_gfi(constraints_arg=1)
def _importance(model, key, observations, args, num_particles, proposal, proposal_args, chunk_size):
    def particle(k):
        if proposal is None:
            trace, log_weight = model.generate(k, observations, args)
        else:
            proposal_key, model_key = jax.random.split(k)
            proposed = proposal.simulate(proposal_key, proposal_args)
            constraints = ppl.merge(proposed.choices, observations)
            trace, log_weight = model.generate(model_key, constraints, args)
            log_weight = log_weight - proposed.log_density
        return ppl.Trace(trace.choices, trace.retval, (), None), log_weight  # log density: on demand

    # Outputs that are the same for every particle are computed and stored once.
    one = lambda k: jax.tree.map(lambda x: x[0], ppl.vmap_particles(particle, 1)(k)[0])
    flags, once, closed = split_by_dependence(one, key)
    flags, treedef = jax.tree.flatten(flags)
    chunk_size = chunk_size or max(1, CHUNK_BYTES // max(intermediate_bytes(closed.jaxpr), 1))
    varying = lambda k: _varying(particle, k, flags)
    *batched, log_weights = _chunked(varying, key, num_particles, chunk_size)
    batched, once = iter(batched), iter(once)
    particles = jax.tree.unflatten(treedef, [next(batched) if flag else next(once) for flag in flags])
    observed = tuple(ppl.choicemap.by_path(observations))
    return ImportanceResult(particles, log_weights, args, tuple(not flag for flag in flags), model, observed)


CHUNK_BYTES = 1 << 30


def intermediate_bytes(jaxpr):
    """The bytes of every value ``jaxpr`` computes (nested jaxprs once), an
    upper bound on what one evaluation holds before XLA fuses it.

    >>> closed = jax.make_jaxpr(lambda x: jnp.sin(x) * 2.0)(jnp.zeros(10))
    >>> intermediate_bytes(closed.jaxpr)  # two float32[10]
    80
    """
    total = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            aval = var.aval
            itemsize = getattr(getattr(aval, "dtype", None), "itemsize", 8)
            total += int(np.prod(getattr(aval, "shape", ()), dtype=int)) * itemsize
        for sub in sub_jaxprs(eqn.params):
            total += intermediate_bytes(getattr(sub, "jaxpr", sub))
    return total


def _varying(particle, key, flags):
    trace, log_weight = particle(key)
    return [leaf for leaf, flag in zip(jax.tree.leaves(trace), flags) if flag] + [log_weight]


def _chunked(fn, key, num_particles, chunk_size):
    """Particles in equal chunks of at most ``chunk_size`` that share one key
    each (their random choices are drawn jointly, see ppl.vmap_particles);
    chunks run one after another. One chunk size means one copy of the
    program to compile; a last chunk padded past ``num_particles`` is cut.
    Several chunks get a size that is a multiple of 64: JAX draws an odd
    number of random values on CPU several times slower (three Normal choices
    for 1e6 particles in chunks of 166,667: 170 ms; of 166,720: 56 ms)."""
    num_chunks = -(-num_particles // chunk_size)
    size = -(-num_particles // num_chunks)
    if num_chunks == 1:
        return ppl.vmap_particles(fn, size)(key)
    size = -(-size // 64) * 64
    run = lambda c: ppl.vmap_particles(fn, size)(jax.random.fold_in(key, c))
    full = jax.lax.map(run, jnp.arange(num_chunks))
    return [x.reshape((-1,) + x.shape[2:])[:num_particles] for x in full]
