"""Resampling schemes for sequential Monte Carlo, and the weight summaries
that decide when to resample.

Each scheme takes a key and unnormalised log weights ``(N,)`` (``-inf`` for
a particle of weight zero; at least one finite) and returns ``num_samples``
ancestor indices (int32, default ``N``); the expected number of copies of
particle ``i`` is ``num_samples * w_i`` for every scheme (Douc, Cappé and
Moulines, "Comparison of resampling schemes for particle filtering", 2005).
Systematic, stratified and residual resampling have lower offspring
variance than multinomial.

Particle ``i`` owns the interval ``[edges[i-1], edges[i])`` of the
cumulative weights. Rounding must never pick a particle of weight zero: XLA's
cumulative sum adds in blocks, so its partial sums can decrease, and a zero
weight can still move the sum by a few ulps (at a million particles,
thousands of times), which gives that particle a tiny interval. A binary
search takes the raw cumulative sums (within its search the found interval
always holds the point, sorted or not) and then swaps a particle of weight
zero, found only through such an ulp-wide interval, for the heaviest one; a
point past the last edge (rounding) goes to the last particle, swapped the
same way. The O(N) counting forms need nondecreasing edges: a running
maximum over the sums at the positive weights repeats the previous edge
exactly at a zero weight, so a zero weight owns an empty interval, and the
count of points below the last edge is set to exactly ``num_samples``.

Multinomial and residual locate uniforms among the edges by binary search,
O(N log N), and so does systematic up to ``SEARCH_UP_TO`` particles (fewer
kernels). Systematic beyond it, and stratified, need no search: the number of
their points below each edge has a closed form, the differences of those
numbers are the offspring counts, and the counts are expanded into sorted
ancestors in O(N) (at a million particles on CPU, about two thirds of the
time of cumulative sum + ``jnp.searchsorted``).

Everything is computed in the weights' dtype, half precision in JAX's
default float (a cumulative sum of a million weights in float16 would be
meaningless), and works under ``jax.jit`` and ``jax.vmap`` (``num_samples``
is static).
"""

import operator

import jax
import jax.numpy as jnp

__all__ = [
    "multinomial",
    "systematic",
    "systematic_search",
    "systematic_counting",
    "stratified",
    "residual",
    "RESAMPLERS",
    "resampler",
    "effective_sample_size",
    "normalized_weights",
    "normalise",
    "uniform_log_weights",
    "gather",
]


def normalized_weights(log_weights):
    """The weights ``exp(log_weights)`` divided by their sum (a softmax,
    computed after subtracting the largest log weight, so it never overflows).

    >>> normalized_weights(jnp.array([1000.0, -jnp.inf, 1000.0]))
    Array([0.5, 0. , 0.5], dtype=float32)
    """
    return jax.nn.softmax(log_weights)


def uniform_log_weights(n, dtype):
    """``n`` equal normalised log weights, ``-log n`` each, in ``dtype``.

    >>> uniform_log_weights(4, jnp.float32)
    Array([-1.3862944, -1.3862944, -1.3862944, -1.3862944], dtype=float32)
    """
    return jnp.full((n,), -jnp.log(jnp.asarray(n, dtype)), dtype)


def gather(tree, ancestors):
    """Every leaf of ``tree`` (leading axis: particles) taken at ``ancestors``
    (indices in range, as every resampler gives: no bounds check per element).

    >>> gather({"x": jnp.array([10, 11, 12])}, jnp.array([2, 2, 0]))
    {'x': Array([12, 12, 10], dtype=int32)}
    """
    return jax.tree.map(lambda x: jnp.asarray(x).at[ancestors].get(mode="promise_in_bounds"), tree)


def normalise(log_weights):
    """``(normalised log weights, log-sum-exp)``: the weights divided by their
    sum, and the log of that sum (an SMC step's contribution to log Z). All
    ``-inf`` gives uniform weights and a sum of ``-inf`` (Z estimated as 0).

    >>> normalise(jnp.log(jnp.array([1.0, 3.0])))
    (Array([-1.3862944 , -0.28768206], dtype=float32), Array(1.3862944, dtype=float32))
    """
    total = jax.nn.logsumexp(log_weights)
    uniform = uniform_log_weights(log_weights.shape[0], log_weights.dtype)
    return jnp.where(jnp.isneginf(total), uniform, log_weights - total), total


def effective_sample_size(log_weights):
    """Kish's effective sample size ``(sum w)^2 / sum w^2``, computed on the
    weights divided by the largest one (which neither overflow nor lose the
    precision that ``2 logsumexp(log w) - logsumexp(2 log w)`` loses when the
    log weights are large).

    >>> effective_sample_size(jnp.zeros(8))  # equal weights
    Array(8., dtype=float32)
    >>> effective_sample_size(jnp.array([0.0, -jnp.inf, -jnp.inf]))  # one particle
    Array(1., dtype=float32)
    """
    weights = jnp.exp(log_weights - jnp.max(log_weights))
    return jnp.sum(weights) ** 2 / jnp.sum(weights**2)


def multinomial(key, log_weights, num_samples=None):
    """Multinomial resampling: ``num_samples`` independent draws from the
    weights, each a uniform located among the cumulative weights by binary
    search: O(N log N). (Drawing the uniforms sorted, by exponential spacings,
    would cost more than it saves: a binary search is no faster on sorted
    queries.)

    >>> ancestors = multinomial(jax.random.key(0), jnp.log(jnp.array([0.2, 0.0, 0.8])), 6)
    >>> ancestors.shape, bool((ancestors != 1).all())  # particle 1 has weight zero
    ((6,), True)
    """
    num_samples = _num_samples(log_weights, num_samples)
    weights, top = _heaviest(log_weights)
    return _search(weights, top, _uniforms(key, num_samples, weights.dtype))


# Up to this many particles systematic resampling locates its points by one
# binary search: fewer kernels per step than the O(N) counting form (four
# cumulative sums and a scatter), which is faster beyond. Measured on CPU,
# the bootstrap filter of benchmarks (G) against hand-written JAX (one process
# per form, interleaved repeats): search 0.99x / counting 1.32x at N = 1000,
# 1.04x / 1.10x at 10,000, 0.99x / 0.87x at 30,000, 1.07x / 0.74x at 100,000.
SEARCH_UP_TO = 2**14


def systematic(key, log_weights, num_samples=None):
    """Systematic resampling (Kitagawa 1996; Carpenter, Clifford and Fearnhead
    1999): one uniform ``u``, points ``k + u`` for ``k < num_samples`` on the
    cumulative weights scaled to ``[0, num_samples]``. Each particle gets
    ``floor(num_samples w_i)`` copies or one more. Sorted ancestors. Up to
    ``SEARCH_UP_TO`` particles the points are located by binary search
    (``systematic_search``), beyond by counting (``systematic_counting``, O(N)).

    >>> systematic(jax.random.key(0), jnp.log(jnp.array([0.5, 0.0, 0.5])), 2)
    Array([0, 2], dtype=int32)
    """
    size = max(_num_samples(log_weights, num_samples), jnp.shape(log_weights)[0])
    return (systematic_search if size <= SEARCH_UP_TO else systematic_counting)(key, log_weights, num_samples)


def systematic_search(key, log_weights, num_samples=None):
    """``systematic`` by one binary search of the points among the edges:
    O(N log N), and few kernels per call.

    >>> systematic_search(jax.random.key(0), jnp.log(jnp.array([0.5, 0.0, 0.5])), 2)
    Array([0, 2], dtype=int32)
    """
    num_samples = _num_samples(log_weights, num_samples)
    weights, top = _heaviest(log_weights)
    points = jnp.arange(num_samples, dtype=weights.dtype) + _uniforms(key, 1, weights.dtype)[0]
    return _search(weights, top, points, num_samples)


def systematic_counting(key, log_weights, num_samples=None):
    """``systematic`` by counting: the number of points below an edge ``x`` is
    ``ceil(x - u)``, so each particle's offspring count needs no search: O(N).

    >>> systematic_counting(jax.random.key(0), jnp.log(jnp.array([0.5, 0.0, 0.5])), 2)
    Array([0, 2], dtype=int32)
    """
    num_samples = _num_samples(log_weights, num_samples)
    edges = _edges(_positive_weights(log_weights), num_samples)
    offset = _uniforms(key, 1, edges.dtype)[0]
    below = jnp.ceil(edges - offset).astype(jnp.int32)
    return _expand(_offspring(below, edges, num_samples), num_samples)


def stratified(key, log_weights, num_samples=None):
    """Stratified resampling (Kitagawa 1996): one uniform per stratum, points
    ``k + u_k`` for ``k < num_samples``. The points below an edge ``x`` are
    those of the ``floor(x)`` whole strata, plus one if the point of ``x``'s
    own stratum lies below it: O(N), no search. Sorted ancestors.

    >>> ancestors = stratified(jax.random.key(0), jnp.log(jnp.array([0.1, 0.6, 0.3])), 10)
    >>> int(jnp.sum(ancestors == 1)) in (6, 7)  # 6 whole strata lie inside particle 1
    True
    """
    num_samples = _num_samples(log_weights, num_samples)
    edges = _edges(_positive_weights(log_weights), num_samples)
    offsets = _uniforms(key, num_samples, edges.dtype)
    whole = jnp.floor(edges)
    stratum = jnp.minimum(whole, num_samples - 1).astype(jnp.int32)
    below = whole.astype(jnp.int32) + (offsets[stratum] < edges - whole)
    return _expand(_offspring(below, edges, num_samples), num_samples)


def residual(key, log_weights, num_samples=None):
    """Residual resampling (Liu and Chen 1998): ``floor(num_samples w_i)``
    copies of each particle, deterministically, in the first slots; the
    ``R`` remaining slots (known only at run time) by multinomial resampling
    on the remainders ``num_samples w_i - floor(num_samples w_i)``: every
    slot gets a multinomial draw, and the last ``R`` keep theirs (independent
    draws, so any ``R`` of them will do). O(N log N).

    >>> residual(jax.random.key(0), jnp.log(jnp.array([0.5, 0.25, 0.25])), 4)  # deterministic
    Array([0, 0, 1, 2], dtype=int32)
    """
    num_samples = _num_samples(log_weights, num_samples)
    weights = _positive_weights(log_weights)
    expected = weights * (num_samples / jnp.sum(weights))
    # A count a few ulps below an integer is that integer: the weights'
    # rounding would otherwise turn an exact multiple of 1/num_samples into
    # a random draw (a bias of at most 4 ulps of the count).
    copies = jnp.floor(expected * (1 + 4 * jnp.finfo(expected.dtype).eps)).astype(jnp.int32)
    remainders = jnp.maximum(expected - copies, 0)
    # Should rounding make the copies add up to more than num_samples,
    # _expand keeps the first num_samples of them.
    deterministic = _expand(copies, num_samples)
    # Remainders that all round to zero leave no slots in exact arithmetic;
    # with rounding they may leave a few, drawn from the weights themselves.
    remainders = jnp.where(jnp.any(remainders > 0), remainders, weights)
    drawn = _search(remainders, _index_of(remainders, jnp.max(remainders)), _uniforms(key, num_samples, weights.dtype))
    return jnp.where(jnp.arange(num_samples) < jnp.sum(copies), deterministic, drawn)


RESAMPLERS = {"multinomial": multinomial, "systematic": systematic, "stratified": stratified, "residual": residual}


def resampler(name):
    """The resampling function called ``name`` (a key of ``RESAMPLERS``).

    >>> resampler("systematic") is systematic
    True
    """
    if name not in RESAMPLERS:
        raise ValueError(f"unknown resampler {name!r}; expected one of {', '.join(map(repr, RESAMPLERS))}")
    return RESAMPLERS[name]


def _num_samples(log_weights, num_samples):
    if jnp.ndim(log_weights) != 1:
        raise ValueError(f"log_weights must have shape (particles,), got {jnp.shape(log_weights)} (use jax.vmap for a batch)")
    if num_samples is None:
        return jnp.shape(log_weights)[0]
    try:
        count = operator.index(num_samples)  # a Python or NumPy integer, not a traced value
    except TypeError:
        count = 0
    if count < 1:
        raise ValueError(f"num_samples must be a positive integer known at trace time, got {num_samples!r}")
    return count


def _as_float(log_weights):
    """The log weights in their own float dtype if it has at least 32 bits,
    else (half precision, integers) in JAX's default float: float32, or
    float64 under ``jax_enable_x64``."""
    dtype = jnp.result_type(log_weights)
    if not jnp.issubdtype(dtype, jnp.floating) or jnp.finfo(dtype).bits < 32:
        dtype = jnp.result_type(float)
    return jnp.asarray(log_weights, dtype)


def _positive_weights(log_weights):
    """``exp(log_weights - max)``: the largest weight is 1, ``-inf`` gives 0."""
    log_weights = _as_float(log_weights)
    return jnp.exp(log_weights - jnp.max(log_weights))


def _heaviest(log_weights):
    """``(_positive_weights(log_weights), the index of a largest one)``."""
    log_weights = _as_float(log_weights)
    largest = jnp.max(log_weights)
    return jnp.exp(log_weights - largest), _index_of(log_weights, largest)


def _index_of(values, largest):
    """The last index of ``largest`` in ``values`` (0 if absent: NaNs). A max
    of indices: XLA's argmax on CPU, a variadic reduction, ran as long as a
    whole cumulative sum at 10,000 particles."""
    return jnp.max(jnp.where(values == largest, jnp.arange(values.shape[0]), 0))


def _edges(weights, total):
    """The cumulative weights, scaled to end at ``total``. XLA's cumulative
    sum adds in blocks, so its partial sums can decrease, and a zero weight
    can still move the sum (at a million particles, thousands of times); a
    running maximum over the sums at the positive weights makes the edges
    nondecreasing and repeats the previous edge exactly at a zero weight.
    (``lax.cummax``: ``associative_scan(jnp.maximum)`` ran up to 1.3 times
    faster at a million particles on CPU, but took 3 times longer to compile.)"""
    cumulative = jax.lax.cummax(jnp.where(weights > 0, jnp.cumsum(weights), 0))
    return jnp.where(cumulative > 0, cumulative * (total / cumulative[-1]), 0)


def _uniforms(key, size, dtype):
    """``size`` uniforms on [0, 1). Drawn in an even number: on CPU, JAX draws
    an odd number of random values ten times slower (1e6 + 1: 50 ms, 1e6: 5 ms)."""
    return jax.random.uniform(key, (size + size % 2,), dtype)[:size]


def _search(weights, top, points, end=1):
    """The particle whose interval of the cumulative weights, scaled to end
    at ``end``, holds each point (the points are scaled, not the sums: equal
    weights keep exact integer edges), found by binary search of the raw
    sums: ``cumulative[i-1] <= point < cumulative[i]`` holds for the found
    ``i`` even where rounding made the sums decrease. A particle of weight
    zero is found only through an interval of a few ulps that rounding made,
    and a point past the last edge (rounding) finds the last particle: either
    of weight zero is swapped for ``top``, a particle of positive weight.
    ``method="scan"`` was the fastest on CPU at a million particles;
    ``"sort"`` was over ten times slower."""
    cumulative = jnp.cumsum(weights)
    found = jnp.searchsorted(cumulative, points * (cumulative[-1] / end), side="right", method="scan")
    found = jnp.minimum(found, weights.shape[0] - 1)
    return jnp.where(weights.at[found].get(mode="promise_in_bounds") > 0, found, top).astype(jnp.int32)


def _offspring(below, edges, total):
    """Offspring counts from the number of points below each right edge
    (nondecreasing edges give nondecreasing numbers). The edges that reach
    the end (the last, and any zero weights after it) count exactly
    ``total``, whatever rounding did to the points or the scaling."""
    below = jnp.where(edges >= edges[-1], total, jnp.clip(below, 0, total))
    return jnp.diff(below, prepend=0)


def _expand(offspring, num_samples):
    """Sorted ancestors, ``offspring[i]`` copies of each ``i``, truncated (or,
    for fewer, left unfilled) at ``num_samples`` slots: the ancestor of slot
    ``j`` is the number of particles after the first whose copies start at
    or before ``j``. A scatter-add of ones at the starts and a cumulative
    sum: O(N), in exact integer arithmetic."""
    starts = jnp.cumsum(offspring) - offspring
    marks = jnp.zeros(num_samples, jnp.int32).at[starts[1:]].add(1, mode="drop")  # starts past the end: dropped
    return jnp.cumsum(marks, dtype=jnp.int32)
