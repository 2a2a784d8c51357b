"""What an inference function returns, as a matrix of posterior draws:
``(num_draws, scalars)`` in the latents' layout, thinned from the ESS for
Markov chains."""

import math

import jax.numpy as jnp

import ppl
from ppl.choicemap import by_path
from ppl.errors import AddressError, format_address
from ppl.inference import diagnostics
from ppl.inference.mcmc.result import MCMCResult

__all__ = ["posterior_matrix", "thinned_indices"]


def posterior_matrix(output, layout, num_draws):
    """``(draws, ess)`` from one run of ``infer_fn``: ``draws`` (num_draws,
    scalars) in ``layout``'s order, and ``ess`` (scalars,), the smaller of the
    bulk and tail ESS of each scalar for Markov chains (None for independent draws).

    ``output`` is a choice map of the latents with a leading draws axis, or
    leading ``(chains, draws)`` axes (Markov chains), a ``ppl.Trace`` with such
    choices (``importance(...).resample(key, n)``), or an ``mcmc`` result.
    Independent draws: the first ``num_draws``. Chains: ``num_draws`` draws
    evenly spaced over all chains, a thinning of T / num_draws for T draws in
    all, which gives effectively independent draws when it is at least the
    autocorrelation time T / ESS, that is when ESS >= num_draws (``simulate``
    warns otherwise).

    >>> layout = ppl.inference.calibration.observed.LatentLayout({"mu": jnp.zeros(())})
    >>> draws, ess = posterior_matrix({"mu": jnp.arange(10.0)}, layout, 4)
    >>> draws[:, 0].tolist(), ess
    ([0.0, 1.0, 2.0, 3.0], None)
    """
    samples = _samples(output)
    flat = by_path(samples) if isinstance(samples, dict) else None
    if flat is None:
        raise TypeError(
            f"infer_fn returned {_describe(output)}; it must return posterior draws of the latents: a choice "
            "map with a leading draws axis (or (chains, draws) axes), a ppl.Trace of draws, or an mcmc result"
        )
    missing = [format_address(p) for p in layout.paths if p not in flat]
    if missing:
        raise AddressError(
            f"infer_fn's draws lack the latent choice{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
            f"they must hold every latent: {layout.describe()}"
        )
    leading = _leading_axes(flat, layout)
    matrix = layout.matrix(samples, leading)
    total = math.prod(leading)
    if total < num_draws:
        raise ValueError(f"infer_fn returned {total} draws (leading axes {leading}); num_draws={num_draws} needs at least that many")
    if len(leading) == 1:
        return matrix[:num_draws], None
    ess = jnp.minimum(diagnostics.ess_bulk(matrix), diagnostics.ess_tail(matrix))
    return matrix.reshape(total, layout.size)[thinned_indices(total, num_draws)], ess


def thinned_indices(total, num_draws):
    """``num_draws`` indices evenly spaced in 0..total-1 (the middle of each of
    ``num_draws`` equal stretches), for draws of chains laid end to end.

    >>> thinned_indices(12, 3).tolist()
    [2, 6, 10]
    """
    return ((jnp.arange(num_draws) + 0.5) * (total / num_draws)).astype(jnp.int32)


def _describe(output):
    shape = getattr(output, "shape", None)
    return f"an array of shape {tuple(shape)}" if shape is not None else f"a {type(output).__name__}"


def _samples(output):
    if isinstance(output, MCMCResult):
        return output.samples
    if isinstance(output, ppl.Trace):
        return output.choices
    return output


def _leading_axes(flat, layout):
    """The draws axes shared by every latent leaf: ``(draws,)`` or ``(chains, draws)``."""
    leading = None
    for path, shape in zip(layout.paths, layout.shapes):
        got = tuple(jnp.shape(flat[path]))
        extra = len(got) - len(shape)
        if extra not in (1, 2) or got[extra:] != shape:
            raise ValueError(
                f"infer_fn's draws of {format_address(path)!r} have shape {got}; expected (num_draws, *{shape}) "
                f"or (chains, draws, *{shape}): the latent's shape {shape} after the draws axes"
            )
        if leading is not None and got[:extra] != leading:
            raise ValueError(
                f"infer_fn's draws disagree on their leading axes: {format_address(path)!r} has {got[:extra]}, "
                f"{format_address(layout.paths[0])!r} has {leading}"
            )
        leading = got[:extra]
    return leading
