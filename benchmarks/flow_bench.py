"""(K) Normalizing flows on Neal's funnel (systems in ``flow_systems.py``).

(K1) One flow-ELBO training step (affine coupling, 4 layers) in ppl against
the same step hand-written in JAX + optax: 300 steps inside one jitted
``lax.scan`` (as ``vi.fit`` runs them), interleaved repeats, medians; the
hand-written step compiled a second time is timed too, as a reference for
the noise between two copies of one program.

(K2) Path gradients (sticking the landing) for every layer type: the cost of
one gradient (20 per jitted call, interleaved calls, medians) of the
256-draw ELBO by the standard reparameterised
estimator (``vi.elbo``), by ppl's fast path estimator (``vi.stl_elbo``: the
score grad_x log q from the forward recursion) and by the path estimator
computed the slow way (log q of each draw through the inverse at held
parameters); the gradient variance of the standard and the fast path
estimators at a flow trained for 1,000 steps (mean over coordinates
of the variance over 256 single-draw estimates); and the
final ELBO (20,000 draws, with its standard error) after
``TRAIN`` steps with each estimator from the same start.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import flow_systems as systems
from benchmarks.timing import interleaved, summary
import ppl
from ppl.inference import vi

__all__ = ["run"]

STEPS, REPEATS = 300, 15
PRETRAIN, TRAIN, VARIANCE_KEYS, EVAL_DRAWS = 1000, 2000, 256, 20_000
HIDDEN = (systems.HIDDEN, systems.HIDDEN)
LAYER_TYPES = {
    "affine coupling": functools.partial(vi.AffineCoupling, hidden_sizes=HIDDEN),
    "spline coupling": functools.partial(vi.SplineCoupling, hidden_sizes=HIDDEN),
    "IAF": functools.partial(vi.InverseAutoregressive, hidden_sizes=HIDDEN),
    "MAF": functools.partial(vi.MaskedAutoregressive, hidden_sizes=HIDDEN),
    "planar": vi.Planar,
    "radial": vi.Radial,
}
sg = jax.lax.stop_gradient


def _scanned(step):
    def run(state):
        state, losses = jax.lax.scan(lambda s, _: step(s), state, None, length=STEPS)
        return state, losses[-1]

    return jax.jit(run)


def _step_timing():
    guide = systems.make_guide()
    flow = systems.initial_flow(guide)
    ppl_step, ppl_state = systems.make_ppl_step(guide, flow)
    hand_step, hand_state = systems.make_hand_step(flow)
    copy_step, copy_state = systems.make_hand_step(flow)
    runs = {
        "hand-written JAX + optax": (_scanned(hand_step), hand_state),
        "ppl": (_scanned(ppl_step), ppl_state),
        # the same program compiled again: how far two copies of one program drift apart here
        "hand-written again (noise reference)": (_scanned(copy_step), copy_state),
    }
    states = {name: jax.block_until_ready(fn(state))[0] for name, (fn, state) in runs.items()}  # compile

    def call(name):
        def go(_):
            states[name], loss = runs[name][0](states[name])
            return loss

        return go

    times, last = interleaved({name: call(name) for name in runs}, REPEATS)
    return {name: summary(t) for name, t in times.items()}, {name: float(v) for name, v in last.items()}


def _objectives(guide):
    """name -> the DRAWS-draw objective whose gradient that estimator takes."""

    @ppl.transforms.expectation
    def slow_path(key, params, observations):
        latents, _ = vi.sim(guide, key, (params,))
        log_q = vi.density(guide, latents, (sg(params),))  # through the inverse
        return vi.density(systems.funnel, latents, (params,)) - log_q

    return {
        "standard": vi.elbo(systems.funnel, guide),
        "fast path": vi.stl_elbo(systems.funnel, guide),
        "slow path": slow_path,
    }


def _gradient_seconds(objectives, params, repeats=7, per_call=20):
    """{name: median seconds per gradient}: ``per_call`` gradients (fresh keys)
    inside one jitted scan per call, the estimators' calls interleaved."""

    def gradients(objective):
        def run(key):
            def one(total, k):
                grad = vi.averaged(objective, systems.DRAWS).grad_estimate(k, params, {})
                return jax.tree.map(jnp.add, total, grad), None
            zeros = jax.tree.map(jnp.zeros_like, params)
            return jax.lax.scan(one, zeros, jax.random.split(key, per_call))[0]
        return jax.jit(run)

    calls = {name: gradients(objective) for name, objective in objectives.items()}
    for call in calls.values():
        jax.block_until_ready(call(jax.random.key(0)))
    times, _ = interleaved({name: (lambda r, c=call: c(jax.random.key(r + 1))) for name, call in calls.items()}, repeats)
    return {name: summary(t)[0] / per_call for name, t in times.items()}


def _train(objective, flow, guide, steps):
    step, state = systems.make_ppl_step(guide, flow, vi.averaged(objective, systems.DRAWS))
    run = jax.jit(lambda state: jax.lax.scan(lambda s, _: step(s), state, None, length=steps)[0])
    return run(state)[0]


def _variance(objective, params):
    grads = jax.jit(jax.vmap(lambda k: objective.grad_estimate(k, params, {})))(
        jax.random.split(jax.random.key(5), VARIANCE_KEYS))
    flat = np.concatenate([np.asarray(g, float).reshape(VARIANCE_KEYS, -1) for g in jax.tree.leaves(grads)], axis=1)
    return float(flat.var(0, ddof=1).mean())


def _elbo(guide, params):
    estimates = jax.jit(jax.vmap(lambda k: vi.elbo(systems.funnel, guide).estimate(k, params, {})))(
        jax.random.split(jax.random.key(9), EVAL_DRAWS))
    estimates = np.asarray(estimates, float)
    return estimates.mean(), estimates.std(ddof=1) / np.sqrt(len(estimates))


def _path_figures(name, layer, train, log):
    num_layers = 8 if name in ("planar", "radial") else systems.LAYERS
    guide = systems.make_guide(layer, num_layers)
    start = {"guide": systems.initial_flow(guide)}
    objectives = _objectives(guide)
    seconds = _gradient_seconds(objectives, start)
    log(f"  {name:16s} gradient ms: " + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in seconds.items()))
    row = {"seconds": seconds}
    if train:
        pretrained = _train(objectives["standard"], start["guide"], guide, PRETRAIN)
        row["variance"] = {kind: _variance(objectives[kind], pretrained) for kind in ("standard", "fast path")}
        row["elbo"] = {kind: _elbo(guide, _train(objectives[kind], start["guide"], guide, TRAIN))
                       for kind in ("standard", "fast path")}
        log(f"  {name:16s} variance {row['variance']}, final ELBO {row['elbo']}")
    return row


def run(log=print, train_types=("affine coupling", "spline coupling", "IAF")):
    """(markdown lines, figures)."""
    step_times, losses = _step_timing()
    hand, ppl_time = step_times["hand-written JAX + optax"], step_times["ppl"]
    log(f"  K1: hand {hand[0] * 1e3 / STEPS:.3f} ms/step, ppl {ppl_time[0] * 1e3 / STEPS:.3f} ms/step, "
        f"ratio {ppl_time[0] / hand[0]:.3f}")
    paths = {name: _path_figures(name, layer, name in train_types, log) for name, layer in LAYER_TYPES.items()}
    return _markdown(step_times, losses, paths), {"steps": step_times, "paths": paths}


def _markdown(step_times, losses, paths):
    hand = step_times["hand-written JAX + optax"][0]
    lines = [
        "## (K) Normalizing flows on a 10-dimensional funnel",
        "",
        " ".join(__doc__.split("\n\n", 1)[1].split()),
        "",
        f"### (K1) One flow-ELBO step ({systems.LAYERS} affine coupling layers, hidden {systems.HIDDEN}x2, "
        f"{systems.DRAWS} draws, adam), {STEPS} steps per jitted scan",
        "",
        "| system | ms per step (median) | IQR | ÷ hand-written | loss after the last call |",
        "|---|---|---|---|---|",
    ]
    for name, (median, iqr) in step_times.items():
        lines.append(f"| {name} | {median * 1e3 / STEPS:.3f} | {iqr * 1e3 / STEPS:.3f} | {median / hand:.3f} | {losses[name]:.2f} |")
    lines += [
        "",
        f"### (K2) Path gradients: cost per {systems.DRAWS}-draw gradient, variance, final ELBO (log Z = 0)",
        "",
        "| layers | standard ms | fast path ms | fast ÷ standard | slow path (inverse) ms | slow ÷ standard "
        "| variance standard | variance fast path | final ELBO standard | final ELBO fast path |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in paths.items():
        s = row["seconds"]
        cells = [name, f"{s['standard'] * 1e3:.2f}", f"{s['fast path'] * 1e3:.2f}", f"{s['fast path'] / s['standard']:.2f}",
                 f"{s['slow path'] * 1e3:.2f}", f"{s['slow path'] / s['standard']:.2f}"]
        if "variance" in row:
            v, e = row["variance"], row["elbo"]
            cells += [f"{v['standard']:.3g}", f"{v['fast path']:.3g}",
                      f"{e['standard'][0]:.3f} ± {e['standard'][1]:.3f}", f"{e['fast path'][0]:.3f} ± {e['fast path'][1]:.3f}"]
        else:
            cells += ["", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    print("\n".join(run()[0]))
