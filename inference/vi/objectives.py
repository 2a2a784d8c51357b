"""The objectives library: each objective is a short program over ``sim`` and
``density``, turned by ADEV (``ppl.transforms.expectation``) into unbiased
estimators of its value and gradient.

Every objective here is an ``Objective``: an expectation of the program
``(key, params, observations, *args) -> real``. The model and the guide are
both called with ``(params, *args)`` (as NumPyro calls model and guide with
the same arguments); ``observations`` is the model's observed choice map.
Objectives are maximised.
"""

import jax
import jax.numpy as jnp
from jax import lax
from numpyro.distributions import Distribution

import ppl
from ppl.inference.vi.constructs import density, logmeanexp, marginal, sim
from ppl.inference.vi.fit import _axes, _data_size
from ppl.transforms import Expectation, Reinforce

__all__ = [
    "Objective",
    "elbo",
    "iwelbo",
    "stl_elbo",
    "vimco",
    "rws",
    "rws_model",
    "rws_guide",
    "renyi",
    "hvi",
    "iwhvi",
    "diwhvi",
    "per_datum",
    "averaged",
]

sg = lax.stop_gradient


class Objective(Expectation):
    """A library objective. ``local`` names the per-datapoint latents; with
    ``with_data_scale(s)`` (used by ``fit`` for minibatches) the observed
    choices and the local latents count ``s`` times, which keeps the estimate
    of the full-data objective unbiased."""

    def __init__(self, program, strategies=None, local=(), data_scale=1.0, name="objective"):
        self.program, self.local, self.data_scale, self.name = program, tuple(local), data_scale, name
        super().__init__(self._run, strategies)

    def _run(self, key, params, observations, *args):
        try:
            return self.program(key, params, observations, tuple(args), self._scales(observations))
        except ppl.errors.ArgumentCountError as error:
            raise _params_convention_error(self, error) from None

    def _scales(self, observations):
        if self.data_scale == 1.0:
            return _Scales(None, None)
        local = {address: self.data_scale for address in self.local}
        observed = {address: self.data_scale for address in ppl.flatten(observations)}
        return _Scales({**observed, **local}, local)

    def with_data_scale(self, data_scale):
        """The same objective, its data term counted ``data_scale`` times."""
        return Objective(self.program, self.strategies, self.local, data_scale, self.name)

    def with_strategies(self, strategies):
        """The same objective with other gradient strategies."""
        return Objective(self.program, strategies, self.local, self.data_scale, self.name)

    def _identity(self):
        strategies = self.strategies if isinstance(self.strategies, str) else tuple(map(id, self.strategies.values()))
        return (self.program, self.local, self.data_scale, strategies)

    def __eq__(self, other):  # equal objectives share compiled steps (``fit`` jits on them)
        return type(other) is Objective and self._identity() == other._identity() and self.strategies == other.strategies

    def __hash__(self):
        return hash(self._identity())

    def __repr__(self):
        return f"<{self.name}>"


def _params_convention_error(objective, error):
    return TypeError(
        f"{objective!r}: {error}. In vi objectives the model and the guide are both called with "
        "(params, *args), as NumPyro calls model and guide with the same arguments: give each a first "
        "parameter for the parameters (unused if it has none), e.g. def model(params, xs): ..."
    )


class _Scales:
    def __init__(self, model, guide):
        self.model, self.guide = model, guide


def _log_weight(key, model, guide, params, observations, args, scales, guide_params=None):
    """``log p(z, obs) - log q(z)`` for one ``z`` drawn from the guide."""
    key_guide, key_model = _keys(key)
    latents, log_q = sim(guide, key_guide, (_or(guide_params, params), *args), scale=scales.guide)
    log_p = density(model, ppl.merge(latents, observations), (params, *args), key=key_model, scale=scales.model)
    return log_p - log_q


def _keys(key):
    """The guide's key and the model's (used only by estimated densities): the
    model's is derived apart, so that when unused it costs nothing (XLA drops it)."""
    return key, jax.random.fold_in(key, 1)


def _or(value, default):
    return default if value is None else value


def elbo(model, guide, local=(), strategies=None):
    """ELBO = E_q[log p(z, x) - log q(z)].

    >>> @ppl.gen
    ... def model(params):
    ...     z = ppl.sample("z", dist.Normal(0.0, 1.0))
    ...     ppl.sample("x", dist.Normal(z, 1.0))
    >>> @ppl.gen
    ... def guide(params):
    ...     ppl.sample("z", dist.Normal(params["loc"], 1.0))
    >>> objective = vi.elbo(model, guide)
    >>> grads = objective.grad_estimate(jax.random.key(0), {"loc": 0.0}, {"x": 2.0})
    >>> grads["loc"].shape
    ()
    """

    def program(key, params, observations, args, scales):
        return _log_weight(key, model, guide, params, observations, args, scales)

    return Objective(program, strategies, local, name=f"elbo({model}, {guide})")


def iwelbo(model, guide, num_particles, local=(), strategies=None):
    """IWELBO(K) = E[log 1/K sum_k p(z_k, x) / q(z_k)] (Burda et al., 2016):
    a lower bound that rises to log p(x) as K grows."""

    def program(key, params, observations, args, scales):
        one = lambda k: _log_weight(k, model, guide, params, observations, args, scales)
        return logmeanexp(ppl.vmap_particles(one, num_particles)(key))

    return Objective(program, strategies, local, name=f"iwelbo(K={num_particles})")


def stl_elbo(model, guide, local=(), strategies=None):
    """The path-derivative ("sticking the landing") ELBO (Roeder et al., 2017):
    the guide's density is evaluated with its parameters held, dropping the
    score term whose expectation is zero; same value, lower variance. For a
    flow family the gradient is the fast one (Vaitl et al., 2024): the score
    grad_x log q comes from the flow's forward pass, with no inverse pass."""

    path_guide = getattr(guide, "with_path_gradient", None)  # a flow: its fast path gradient

    def program(key, params, observations, args, scales):
        key_guide, key_model = _keys(key)
        if path_guide is not None:
            latents, log_q = sim(path_guide(), key_guide, (params, *args), scale=scales.guide)
        else:
            latents, _ = sim(guide, key_guide, (params, *args))
            log_q = density(guide, latents, (sg(params), *args), scale=scales.guide)
        log_p = density(model, ppl.merge(latents, observations), (params, *args), key=key_model, scale=scales.model)
        return log_p - log_q

    return Objective(program, strategies, local, name="stl_elbo")


def renyi(model, guide, alpha, num_particles, local=(), strategies=None):
    """Renyi's alpha bound (Li & Turner, 2016):
    E[1/(1 - alpha) log 1/K sum_k (p(z_k, x) / q(z_k))^(1 - alpha)];
    alpha = 0 is the IWELBO, alpha -> 1 the ELBO."""
    if alpha == 1.0:
        raise ValueError("renyi: alpha = 1 is the ELBO; use vi.elbo")

    def program(key, params, observations, args, scales):
        one = lambda k: _log_weight(k, model, guide, params, observations, args, scales)
        log_weights = ppl.vmap_particles(one, num_particles)(key)
        return logmeanexp((1.0 - alpha) * log_weights) / (1.0 - alpha)

    return Objective(program, strategies, local, name=f"renyi(alpha={alpha}, K={num_particles})")


def _held_particles(key, model, guide, params, observations, args, num_particles, scales):
    """K draws from the guide with its parameters held (no gradient through
    the sampling), and each draw's log p and log q at the live parameters."""

    def one(k):
        latents, _ = sim(guide, k, (sg(params), *args))
        return sg(latents)

    latents = ppl.vmap_particles(one, num_particles)(key)
    log_q = jax.vmap(lambda z: density(guide, z, (params, *args), scale=scales.guide))(latents)
    log_p = jax.vmap(lambda z: density(model, ppl.merge(z, observations), (params, *args), scale=scales.model))(latents)
    return log_p, log_q


# The held draws' strategies: REINFORCE without baseline adds nothing to the
# gradient (their distribution does not depend on the parameters) and, unlike
# enumeration, runs the continuation once.
_HELD = {Distribution: Reinforce(baseline=None)}


def vimco(model, guide, num_particles, local=(), strategies=None):
    """VIMCO (Mnih & Rezende, 2016): the IWELBO's score-function gradient with
    leave-one-out control variates; each particle's learning signal is the
    IWELBO minus the IWELBO with its weight replaced by the geometric mean of
    the others. For discrete guides."""
    if num_particles < 2:
        raise ValueError(f"vimco needs num_particles >= 2, got {num_particles}")

    def program(key, params, observations, args, scales):
        log_p, log_q = _held_particles(key, model, guide, params, observations, args, num_particles, scales)
        log_w = log_p - log_q
        bound = logmeanexp(log_w)
        signal = sg(bound - _leave_one_out(log_w))
        return bound + jnp.sum(signal * (log_q - sg(log_q)))

    return Objective(program, {**_HELD, **(strategies or {})}, local, name=f"vimco(K={num_particles})")


def _leave_one_out(log_w):
    """For each k, the IWELBO with log_w[k] replaced by the mean of the others."""
    k = log_w.shape[0]
    others_mean = (jnp.sum(log_w) - log_w) / (k - 1)
    replaced = jnp.where(jnp.eye(k, dtype=bool), others_mean[:, None], log_w[None, :])
    return logmeanexp(replaced, axis=1)


def _rws_model_term(log_p, log_q):
    return logmeanexp(log_p - sg(log_q))


def _rws_guide_term(log_p, log_q):
    return jnp.sum(jax.nn.softmax(sg(log_p - log_q)) * log_q)


def rws_model(model, guide, num_particles, local=(), strategies=None):
    """Reweighted wake-sleep, wake phase for the model (Bornschein & Bengio,
    2015): log Z_hat with the guide held; its gradient is
    sum_k w_k grad log p(z_k, x), w the normalised importance weights."""

    def program(key, params, observations, args, scales):
        log_p, log_q = _held_particles(key, model, guide, params, observations, args, num_particles, scales)
        return _rws_model_term(log_p, log_q)

    return Objective(program, {**_HELD, **(strategies or {})}, local, name=f"rws_model(K={num_particles})")


def rws_guide(model, guide, num_particles, local=(), strategies=None):
    """Reweighted wake-sleep, wake phase for the guide: sum_k w_k log q(z_k),
    whose gradient estimates -grad KL(p(z | x) || q) (self-normalised)."""

    def program(key, params, observations, args, scales):
        log_p, log_q = _held_particles(key, model, guide, params, observations, args, num_particles, scales)
        return _rws_guide_term(log_p, log_q)

    return Objective(program, {**_HELD, **(strategies or {})}, local, name=f"rws_guide(K={num_particles})")


def rws(model, guide, num_particles, local=(), strategies=None):
    """Both wake phases from one set of particles: the model's parameters
    follow ``rws_model``, the guide's ``rws_guide`` (parameters the model and
    the guide share get both)."""

    def program(key, params, observations, args, scales):
        log_p, log_q = _held_particles(key, model, guide, params, observations, args, num_particles, scales)
        return _rws_model_term(log_p, log_q) + _rws_guide_term(sg(log_p), log_q)

    return Objective(program, {**_HELD, **(strategies or {})}, local, name=f"rws(K={num_particles})")


def hvi(model, joint_guide, latents, proposal, strategies=None):
    """Hierarchical VI (Ranganath et al., 2016): the ELBO of the marginal on
    ``latents`` of ``joint_guide`` (whose other choices are auxiliary), with the
    auxiliary choices' reverse model ``proposal`` (one particle)."""
    return elbo(model, marginal(joint_guide, latents, proposal, 1), strategies=strategies)


def iwhvi(model, joint_guide, latents, proposal, num_particles, strategies=None):
    """Importance-weighted HVI (Sobolev & Vetrov, 2019): the marginal's density
    estimated with ``num_particles`` draws of the auxiliary choices."""
    return elbo(model, marginal(joint_guide, latents, proposal, num_particles), strategies=strategies)


def diwhvi(model, joint_guide, latents, proposal, num_particles, num_inner, strategies=None):
    """Doubly importance-weighted HVI: the IWELBO(``num_particles``) of the
    marginal family estimated with ``num_inner`` auxiliary draws."""
    return iwelbo(model, marginal(joint_guide, latents, proposal, num_inner), num_particles, strategies=strategies)


class _Combined:
    """An objective made from another: gradients from ``estimate``; equal
    when built the same way (``fit`` reuses compiled steps on equal ones)."""

    def grad_estimate(self, key, params, *args):
        return jax.grad(lambda p: self.estimate(key, p, *args))(params)

    def value_and_grad_estimate(self, key, params, *args):
        return jax.value_and_grad(lambda p: self.estimate(key, p, *args))(params)

    def _identity(self):
        raise NotImplementedError

    def __eq__(self, other):
        return type(other) is type(self) and self._identity() == other._identity()

    def __hash__(self):
        return hash(self._identity())


class per_datum(_Combined):
    """A per-datapoint objective summed over a batch: each datum's estimate
    runs under ``jax.vmap`` with its own key, so each gets its own learning
    signal. ``in_axes`` says which of ``(observations, *args)`` carry the batch
    axis (as in ``jax.vmap``). Parameters are shared.

    >>> @ppl.gen
    ... def model(params, x):
    ...     z = ppl.sample("z", dist.Normal(0.0, 1.0))
    ...     ppl.sample("x", dist.Normal(z, 1.0))
    >>> @ppl.gen
    ... def guide(params, x):
    ...     ppl.sample("z", dist.Normal(params * x, 1.0))
    >>> objective = vi.per_datum(vi.elbo(model, guide), in_axes=(0, 0))
    >>> xs = jnp.array([0.5, 1.0, 2.0])
    >>> objective.grad_estimate(jax.random.key(0), 0.5, {"x": xs}, xs).shape
    ()
    """

    def __init__(self, objective, in_axes=0, data_scale=1.0):
        self.objective, self.in_axes, self.data_scale = objective, in_axes, data_scale

    def estimate(self, key, params, observations, *args):
        batch = (observations, *args)
        keys = jax.random.split(key, _data_size(batch, self.in_axes, who="per_datum"))
        axes = _axes(batch, self.in_axes)
        run = lambda k, obs, *a: self.objective.estimate(k, params, obs, *a)
        return self.data_scale * jnp.sum(jax.vmap(run, in_axes=(0, *axes))(keys, observations, *args))

    def with_data_scale(self, data_scale):
        return per_datum(self.objective, self.in_axes, data_scale)

    def _identity(self):
        return (self.objective, self.in_axes, self.data_scale)

    def __repr__(self):
        return f"<per_datum {self.objective!r}>"


class averaged(_Combined):
    """The mean of ``num_samples`` independent estimates of ``objective`` (as
    NumPyro's ``Trace_ELBO(num_particles=...)``): same expectation, variance
    divided by ``num_samples``.

    >>> @ppl.gen
    ... def model(params):
    ...     return ppl.sample("x", dist.Normal(params, 1.0))
    >>> objective = ppl.transforms.expectation(lambda key, mu: model.simulate(key, (mu,)).retval)
    >>> float(vi.averaged(objective, 8).grad_estimate(jax.random.key(0), 0.5))  # d/dmu E[x] = 1
    1.0
    """

    def __init__(self, objective, num_samples):
        if num_samples < 1:
            raise ValueError(f"averaged: num_samples must be >= 1, got {num_samples}")
        self.objective, self.num_samples = objective, num_samples

    def estimate(self, key, params, *args):
        keys = jax.random.split(key, self.num_samples)
        return jnp.mean(jax.vmap(lambda k: self.objective.estimate(k, params, *args))(keys))

    def with_data_scale(self, data_scale):
        if not hasattr(self.objective, "with_data_scale"):
            raise TypeError(f"{self.objective!r} has no with_data_scale")
        return averaged(self.objective.with_data_scale(data_scale), self.num_samples)

    def _identity(self):
        return (self.objective, self.num_samples)

    def __repr__(self):
        return f"<averaged {self.objective!r} x{self.num_samples}>"
