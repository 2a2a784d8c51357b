"""What an MCMC run returns: draws with leading (chains, draws) axes, the
per-draw statistics under ArviZ's ``sample_stats`` names, the final state to
continue from, and the diagnostics table and ArviZ export."""

import jax
import numpy as np

from ppl.choicemap import by_path, from_paths
from ppl.errors import format_address
from ppl.inference.mcmc.sampling import constrained_draw

__all__ = ["MCMCResult"]


class MCMCResult:
    """The draws of an MCMC run (a pytree, so it can leave a ``jax.jit``).

    - ``samples``: the latent choices, nested as the model's, leaves (num_chains, num_samples, ...);
    - ``retvals``: the model's return value at each draw, same leading axes (derived
      quantities); for a gradient-kernel run it is computed from ``positions`` when first
      read (one compiled call), so a run whose return values nobody reads neither
      computes nor stores them;
    - ``stats``: dict of (num_chains, num_samples) arrays under ArviZ's names
      (``"diverging"``, ``"acceptance_rate"``, ``"n_steps"``, ``"tree_depth"``, ``"step_size"``,
      ``"energy"``, ``"lp"``: those the algorithm has);
    - ``state``: the final state; pass it as ``state=`` (with ``num_warmup=0``) to continue;
    - ``positions``: the draws in the unconstrained space, (num_chains, num_samples, dimension)
      (None for trace kernels).
    """

    def __init__(self, samples, retvals, stats, state, positions=None, target=None, max_tree_depth=None, discrete=None):
        """``retvals=None`` with ``positions`` and ``target``: computed when first read,
        the Gibbs choices' values at each draw taken from ``discrete``."""
        self.samples, self._retvals, self.stats, self.state = samples, retvals, stats, state
        self.positions, self.target, self.max_tree_depth = positions, target, max_tree_depth
        self._discrete = {} if discrete is None else discrete
        self._retvals_known = retvals is not None or positions is None or target is None

    @property
    def retvals(self):
        if not self._retvals_known:
            self._retvals = _retvals_at(self.target, self.positions, self._discrete)
            self._retvals_known = True  # also when the model returns nothing (None)
        return self._retvals

    def tree_flatten(self):
        children = (self.samples, self._retvals, self.stats, self.state, self.positions, self.target, self._discrete)
        return children, self.max_tree_depth

    @classmethod
    def tree_unflatten(cls, max_tree_depth, children):
        samples, retvals, stats, state, positions, target, discrete = children
        return cls(samples, retvals, stats, state, positions, target, max_tree_depth, discrete)

    @property
    def num_chains(self):
        return int(jax.tree.leaves(self.stats)[0].shape[0])

    @property
    def num_samples(self):
        return int(jax.tree.leaves(self.stats)[0].shape[1])

    def __repr__(self):
        shapes = ", ".join(
            f"{format_address(path)}: {tuple(np.shape(value))[2:]}" for path, value in by_path(self.samples).items()
        )
        divergences = int(np.sum(self.stats["diverging"])) if "diverging" in self.stats else 0
        return (
            f"MCMCResult({self.num_chains} chains x {self.num_samples} draws; {shapes}; "
            f"{divergences} divergences)"
        )

    def summary(self, retvals=True):
        """Mean, sd, 5/50/95% quantiles, MCSE of the mean, bulk and tail ESS and
        rank-normalised split R-hat per scalar of the samples (in the model's
        order) and of the return values (``retvals=False`` leaves them out), the
        number of divergences, and warnings: a ``diagnostics.Summary``."""
        from ppl.inference.diagnostics import summary

        draws = self._ordered_samples() if isinstance(self.samples, dict) else {"samples": self.samples}
        if retvals and self.retvals is not None and jax.tree.leaves(self.retvals):
            draws["retval"] = self.retvals
        return summary(draws, stats=self.stats, max_tree_depth=self.max_tree_depth)

    def _ordered_samples(self):
        """The samples with addresses in the order the model makes them (jit sorts dict keys)."""
        flat = by_path(self.samples)
        order = [latent.address for latent in self.target.latents] if self.target is not None else []
        paths = [p for p in order if p in flat] + [p for p in flat if p not in order]
        return from_paths({path: flat[path] for path in paths})

    def log_likelihood(self):
        """The log density of each observed choice at every draw, nested like
        the observations, leaves (num_chains, num_samples, ...)."""
        if self.target is None or self.positions is None:
            raise ValueError("this result has no unconstrained target: log_likelihood needs a gradient-kernel run")
        return jax.jit(jax.vmap(jax.vmap(self.target.log_likelihood)))(self.positions)

    def to_arviz(self, *, coords=None, dims=None):
        """An ``arviz.InferenceData`` with ``posterior`` (latent choices and the
        return value), ``sample_stats``, ``log_likelihood`` (per observed
        address, pointwise where the model vmaps its data, so ``arviz.loo`` works)
        and ``observed_data``. ``coords`` / ``dims`` go to ``arviz.from_dict``
        (variables are named by address: ``dims={"theta": ["school"]}``).
        Needs the optional extra ``ppl[arviz]``."""
        try:
            import arviz
        except ImportError as error:
            raise ImportError("to_arviz needs ArviZ: pip install 'ppl[arviz]' (or pip install arviz)") from error
        posterior = _named(self.samples)
        if self.retvals is not None and jax.tree.leaves(self.retvals):
            posterior.update({f"retval{'' if k == 'retval' else '/' + k}": v for k, v in _named(self.retvals, "retval").items()})
        groups = dict(posterior=posterior, sample_stats={k: np.asarray(v) for k, v in self.stats.items()})
        if self.target is not None and self.positions is not None:
            groups["log_likelihood"] = _named(self.log_likelihood())
            groups["observed_data"] = {format_address(p): np.asarray(v) for p, v in self.target.observations.items()}
        return arviz.from_dict(**groups, coords=coords, dims=dims)


jax.tree_util.register_pytree_node_class(MCMCResult)


@jax.jit
def _retvals_at(target, positions, discrete):
    """The model's return value at every draw, leaves (chains, draws, ...)."""
    return jax.vmap(jax.vmap(lambda p, d: constrained_draw(target, p, d)[1]))(positions, discrete)


def _named(tree, default="value"):
    """Flat {"a/b": numpy array} from a nested choice map (or one array)."""
    if not isinstance(tree, dict):
        return {default: np.asarray(tree)}
    return {format_address(path): np.asarray(value) for path, value in by_path(tree).items()}
