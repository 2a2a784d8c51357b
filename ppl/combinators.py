"""Combinators: generative functions built from generative functions.

Each lowers to one JAX construct, so traces keep static shapes and a model
compiles to one XLA program: ``Vmap`` to ``jax.vmap``, ``Scan`` to
``lax.scan``, ``Switch`` to ``lax.switch`` (a select under ``vmap``).
"""

import jax
import jax.numpy as jnp
from jax import lax
from numpyro.distributions import Categorical, Distribution

from ppl.choicemap import NONE, by_path, from_paths, tree_paths
from ppl.core import Call, Edit, GenerativeFunction, Prev
from ppl.distribution import DistributionGF
from ppl.combinator_context import active_mask, placement, scan_hook, scan_level, vmap_level
from ppl.sites import mark_changed, restore, snapshot
from ppl.errors import AddressError, ConstraintError, format_address, unknown_addresses_error
from ppl.gen import gen, sample
from ppl.trace import join_static, split_static
from ppl.validation import no_support_checks

__all__ = ["Vmap", "Scan", "Switch", "cond", "switch", "mixture", "vmap_particles"]


def _mapped(fn, mapper):
    """Run ``fn`` under ``mapper`` (vmap/scan/switch), letting Python values
    in its outputs (``used=True`` flags, static return values) pass through."""
    cell = {}

    def inner(*args):
        dynamic, cell["description"] = split_static(fn(*args))
        return dynamic

    return lambda *args: join_static(mapper(inner)(*args), cell["description"])


def _leading(tree, size, path, what):
    for sub, leaf in tree_paths(tree) if isinstance(tree, dict) else [((), tree)]:
        if leaf is None:
            continue
        if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != size:
            raise ConstraintError(
                f"address {format_address(path + sub)!r}: {what} has shape {tuple(jnp.shape(leaf))}, "
                f"but the combinator maps over {size} elements and needs that leading axis"
            )


def _prev_parts(prev):
    if prev is None:
        return [], None
    return split_static(prev)


class Vmap(GenerativeFunction):
    """``gf.vmap(in_axes)`` / ``gf.repeat(n)``: independent runs, choices stacked."""

    def __init__(self, gf, in_axes, axis_size):
        self.gf, self.in_axes, self.axis_size = gf, in_axes, axis_size

    def __repr__(self):
        return f"{self.gf!r}.vmap(in_axes={self.in_axes!r})"

    def _axes(self, args, path):
        if isinstance(self.in_axes, (int, type(None))):
            return (self.in_axes,) * len(args)
        if len(self.in_axes) != len(args):
            raise TypeError(
                f"address {format_address(path)!r}: vmap in_axes {self.in_axes!r} has {len(self.in_axes)} "
                f"entries for {len(args)} arguments"
            )
        return tuple(self.in_axes)

    def _size(self, args, axes, path):
        sizes = {
            jnp.shape(leaf)[axis]
            for arg, axis in zip(args, axes)
            if axis is not None
            for leaf in jax.tree.leaves(arg)
        }
        if self.axis_size is not None:
            sizes.add(self.axis_size)
        if len(sizes) != 1:
            raise ValueError(
                f"address {format_address(path)!r}: vmap needs one axis size, the mapped arguments have "
                f"{sorted(sizes) or 'none (give axis_size or map an argument)'}"
            )
        return sizes.pop()

    def _edit(self, key, args, constraints, prev, selection, path):
        axes = self._axes(args, path)
        n = self._size(args, axes, path)
        _leading(constraints, n, path, "the constrained value")
        prev_dynamic, prev_description = _prev_parts(prev)

        def one(element, a, c, p):
            p = None if prev_description is None else join_static(p, prev_description)
            # Every element gets the same key: sample_p draws a vmapped choice's
            # elements jointly (independently) from it, as vectorised code would.
            # The per-element `active` flag makes every choice batched, so even a
            # choice whose parameters are shared is drawn once per element.
            with active_mask(element):
                return self.gf._edit(key, a, c, p, selection, path)

        mapper = lambda f: jax.vmap(f, in_axes=(0, axes, 0, 0), axis_size=n)
        with vmap_level():
            edit = _mapped(one, mapper)(jnp.ones((n,), bool), tuple(args), constraints, prev_dynamic)
        edit = edit._replace(reverse_log_density=_summed(edit.reverse_log_density))
        return edit._replace(log_density=jnp.sum(edit.log_density), kept_log_density=jnp.sum(edit.kept_log_density))


class Scan(GenerativeFunction):
    """``gf.scan(length)``: ``gf(carry, x) -> (carry, y)`` iterated; the scanned
    function takes ``(init_carry, xs)`` and returns ``(final_carry, ys)``."""

    def __init__(self, gf, length):
        self.gf, self.length = gf, length

    def __repr__(self):
        return f"{self.gf!r}.scan(length={self.length!r})"

    def _steps(self, xs, path):
        sizes = {jnp.shape(leaf)[0] for leaf in jax.tree.leaves(xs)}
        if self.length is not None:
            sizes.add(self.length)
        if len(sizes) != 1:
            raise ValueError(
                f"address {format_address(path)!r}: scan needs one length, got {sorted(sizes) or 'none'} "
                "(give length, or xs with a leading axis)"
            )
        return sizes.pop()

    def _edit(self, key, args, constraints, prev, selection, path):
        hook = scan_hook()
        if hook is not None:  # a particle filter stopping or replacing this scan (ppl.sequential)
            return hook(self, key, args, constraints, prev, selection, path)
        return self.plain_edit(key, args, constraints, prev, selection, path)

    def plain_edit(self, key, args, constraints, prev, selection, path):
        """The scan's edit, never hooked."""
        if len(args) != 2:
            raise TypeError(f"address {format_address(path)!r}: a scan takes (init_carry, xs), got {len(args)} arguments")
        init, xs = args
        steps = self._steps(xs, path)
        _leading(constraints, steps, path, "the constrained value")
        keys = None if key is None else jax.random.split(key, steps)
        prev_dynamic, prev_description = _prev_parts(prev)

        def step(carry, inputs):
            k, x, c, p = inputs
            p = None if prev_description is None else join_static(p, prev_description)
            edit = self.gf._edit(k, (carry, x), c, p, selection, path)
            if not (isinstance(edit.retval, tuple) and len(edit.retval) == 2):
                raise TypeError(f"address {format_address(path)!r}: a scanned function must return (carry, y)")
            new_carry, y = edit.retval
            return new_carry, edit._replace(retval=y)

        cell = {}

        def body(carry, inputs):
            new_carry, edit = step(carry, inputs)
            dynamic, cell["description"] = split_static(edit)
            return new_carry, dynamic

        if selection:  # a redrawn choice may feed the carry: later steps' parents move
            mark_changed()
        with scan_level():
            final, dynamic = lax.scan(body, init, (keys, xs, constraints, prev_dynamic), length=steps)
        edit = join_static(dynamic, cell["description"])
        return edit._replace(
            reverse_log_density=_summed(edit.reverse_log_density),
            retval=(final, edit.retval),
            log_density=jnp.sum(edit.log_density),
            kept_log_density=jnp.sum(edit.kept_log_density),
        )


def _summed(reverse_log_density):
    return None if reverse_log_density is None else jnp.sum(reverse_log_density)


def vmap_particles(fn, num_particles, out_axes=0):
    """``fn(key, *inputs)`` run as ``num_particles`` independent particles that
    share ``key``: like ``gf.repeat``, each random choice is drawn once for all
    particles, jointly, instead of from a key per particle. ``inputs`` (if
    any) are mapped along their leading axis; outputs are stacked along
    ``out_axes`` (``jax.vmap``'s; None for an output that no particle changes).

    >>> @ppl.gen
    ... def model():
    ...     return ppl.sample("x", dist.Normal(0.0, 1.0))
    >>> xs = ppl.vmap_particles(lambda k: model.simulate(k, ()).retval, 1000)(jax.random.key(0))
    >>> xs.shape, bool(abs(xs.mean()) < 0.2)
    ((1000,), True)
    """

    def run(key, *inputs):
        def one(flag, *particle_inputs):
            with active_mask(flag):
                return fn(key, *particle_inputs)

        with vmap_level():
            return jax.vmap(one, out_axes=out_axes)(jnp.ones((num_particles,), bool), *inputs)

    return run


def _as_gf(branch):
    return DistributionGF(branch, ignore_args=True) if isinstance(branch, Distribution) else branch


class Switch(GenerativeFunction):
    """``ppl.switch(index, branches, *args)``: run branch ``index``.

    Branches may make different choices. The trace holds the union of their
    addresses (static shapes); choices of branches not taken hold zeros and
    count in no density. An address two branches share is one choice.
    """

    def __init__(self, branches):
        self.branches = tuple(_as_gf(b) for b in branches)

    def __repr__(self):
        return f"Switch({list(self.branches)!r})"

    def _structures(self, args, path):
        key = jax.random.key(0)
        shape = lambda b: jax.eval_shape(lambda: b._edit(key, args, None, None, NONE, path).choices)
        structures = [by_path(shape(b)) for b in self.branches]
        union = {}
        for structure in structures:
            for sub, leaf in structure.items():
                if sub in union and (union[sub].shape, union[sub].dtype) != (leaf.shape, leaf.dtype):
                    raise AddressError(
                        f"address {format_address(path + sub)!r} is made by several branches with different "
                        f"shapes/dtypes: {union[sub].shape} {union[sub].dtype} and {leaf.shape} {leaf.dtype}"
                    )
                union.setdefault(sub, leaf)
        if () in union and len(union) > 1:
            raise AddressError(
                f"address {format_address(path)!r}: one branch makes a single choice there (a distribution) and "
                "another makes nested choices; branches sharing an address must agree on its structure"
            )
        return structures, dict(sorted(union.items()))

    def _edit(self, key, args, constraints, prev, selection, path):
        index = jnp.clip(jnp.asarray(args[0]).astype(jnp.int32), 0, len(self.branches) - 1)
        args = tuple(args[1:])
        entered = snapshot()  # if the index or arguments may have moved, so may every value made here
        structures, union = self._structures(args, path)
        given = by_path(constraints) if constraints is not None else {}
        unknown = {format_address(p) for p in given if p not in union}
        if unknown:
            raise unknown_addresses_error(unknown, [format_address(p) for p in union], path)
        static_used, exits = {}, []

        def branch_fn(number, structure, branch):
            def run():
                pick = lambda flat: from_paths({p: v for p, v in flat.items() if p in structure}) if flat else None
                sub_prev = None if prev is None else Prev(pick(by_path(prev.choices)), pick(by_path(prev.used)))
                restore(entered)  # each branch is traced from the state the switch was entered in
                # Padded values of branches not taken would fail support checks.
                with no_support_checks(), active_mask(index == number):
                    edit = branch._edit(key, args, pick(given), sub_prev, selection, path)
                reverse = edit.reverse_log_density
                exits.append((snapshot(), reverse is None))
                choices, used, lps = by_path(edit.choices), by_path(edit.used), by_path(edit.site_log_densities)
                for p in union:
                    static_used.setdefault(p, []).append(used.get(p, False) is True)
                zero = lambda p: jnp.zeros(union[p].shape, union[p].dtype)
                return Edit(
                    from_paths({p: choices.get(p, zero(p)) for p in union}),
                    from_paths({p: jnp.asarray(used.get(p, False)) for p in union}),
                    from_paths({p: jnp.asarray(lps.get(p, 0.0), jnp.result_type(float)) for p in union}),
                    edit.retval,
                    jnp.asarray(edit.log_density, jnp.result_type(float)),
                    jnp.asarray(edit.kept_log_density, jnp.result_type(float)),
                    jnp.asarray(0.0 if reverse is None else reverse, jnp.result_type(float)),
                )

            return run

        runs = [branch_fn(k, s, b) for k, (s, b) in enumerate(zip(structures, self.branches))]
        if placement().vmap_depth:
            # Inside ppl's vmap the index may be batched, and JAX's batching of
            # lax.switch would then broadcast the elements' shared key, so every
            # element would draw the same values. Run every branch on the shared
            # key (each draws jointly for all elements; active_mask keeps the
            # untaken branch's choices out) and select, as that batching would.
            edits = [run() for run in runs]
            edit = jax.tree.map(_select(index), *edits)
        else:
            edit = lax.switch(index, runs)
        used = by_path(edit.used)
        used = {p: True if all(static_used[p]) else v for p, v in used.items()}
        restore(entered or any(state for state, _ in exits))
        # After a moved index, a redrawn choice's old value may come from another branch.
        unknown = any(none for _, none in exits) or (entered and selection)
        reverse = None if unknown else edit.reverse_log_density
        return edit._replace(used=from_paths(used), reverse_log_density=reverse)


def _select(index):
    """``select_n`` by ``index``, except for a value every branch shares (an
    observed choice), which stays itself: visibly independent of the index."""
    return lambda *outs: outs[0] if all(o is outs[0] for o in outs) else lax.select_n(index, *outs)


def switch(index, branches, *args):
    """Stochastic branching: ``ppl.sample(addr, ppl.switch(i, [gf0, gf1], *args))``."""
    return Call(Switch(branches), (index, *args))


def cond(pred, true_branch, false_branch, *args):
    """``ppl.sample(addr, ppl.cond(pred, true_gf, false_gf, *args))``, like ``lax.cond``.

    >>> @ppl.gen
    ... def point(x):
    ...     is_outlier = ppl.sample("outlier", dist.Bernoulli(0.1))
    ...     return ppl.sample("y", ppl.cond(is_outlier, dist.Normal(0.0, 10.0), dist.Normal(x, 0.1)))
    >>> sorted(ppl.flatten(point.simulate(jax.random.key(0), (1.0,)).choices))
    ['outlier', 'y']
    """
    return Call(Switch((false_branch, true_branch)), (jnp.asarray(pred).astype(jnp.int32), *args))


def mixture(components):
    """A mixture whose component is a random choice: choices are
    ``{"component": k, "value": <choices of component k>}``; the
    generative function takes ``(probs, *args)``. (For a mixture with the
    component summed out, use NumPyro's ``dist.MixtureGeneral``.)

    >>> m = ppl.mixture([dist.Normal(0.0, 1.0), dist.Normal(5.0, 1.0)])
    >>> trace = m.simulate(jax.random.key(0), (jnp.array([0.3, 0.7]),))
    >>> sorted(trace.choices)
    ['component', 'value']
    """
    chooser = Switch(components)

    @gen
    def mix(probs, *args):
        component = sample("component", Categorical(probs=probs))
        return sample("value", chooser(component, *args))

    return mix
