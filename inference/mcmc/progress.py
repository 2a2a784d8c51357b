"""One progress bar for all chains, fed from inside the compiled loop.

The compiled loop calls ``tick`` every few transitions; ``tick`` sends
(bar, part, transitions done, divergences) to the host with
``jax.debug.callback``, where the bar adds up the parts (one part per chain
for sequential chains, per device for sharded ones). The bar is found by an
integer id, an array argument of the compiled program, so a new bar on the
next call does not retrace it.
"""

import itertools
import time

import jax
import jax.numpy as jnp
from tqdm import tqdm  # text bar everywhere (tqdm.auto wants ipywidgets in Jupyter)

__all__ = ["ProgressBar", "tick"]

_BARS = {}
_IDS = itertools.count(1)
TICKS = 20  # host callbacks per phase, at most (each is a device-host round trip)


class ProgressBar:
    """A tqdm bar over ``total`` transitions of all chains.

    >>> with ProgressBar(10, enabled=False) as bar:
    ...     bar.id is None
    True
    """

    def __init__(self, total, enabled=True, description="mcmc"):
        self.enabled = enabled
        self.id = jnp.asarray(next(_IDS), jnp.int32) if enabled else None  # None: nothing compiled for the bar
        self.done, self.divergences, self.phase = {}, {}, {}
        self.start = None  # the first report: compilation does not count in the rate
        layout = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
        self.bar = tqdm(total=total, desc=description, bar_format=layout, mininterval=0.25) if enabled else None

    def __enter__(self):
        if self.enabled:
            _BARS[int(self.id)] = self
        return self

    def __exit__(self, *exc):
        if self.enabled:
            _BARS.pop(int(self.id), None)
            self.bar.close()

    def report(self, part, phase, done, divergences):
        self.done[part], self.divergences[part], self.phase[part] = done, divergences, phase
        total_done = sum(self.done.values())
        now = time.perf_counter()
        self.start = self.start or (now, total_done)
        rate = (total_done - self.start[1]) / max(now - self.start[0], 1e-9)
        phase = "warmup" if "warmup" in self.phase.values() else "sampling"
        self.bar.set_description(phase, refresh=False)  # tqdm adds ": "
        speed = f"{rate:,.0f} draws/s, " if now > self.start[0] else ""
        self.bar.set_postfix_str(f"{speed}{sum(self.divergences.values())} divergences", refresh=False)
        self.bar.update(total_done - self.bar.n)


def _report(bar_id, part, phase, done, divergences):
    bar = _BARS.get(int(bar_id))
    if bar is not None:
        bar.report(int(part), ("warmup", "sampling")[int(phase)], int(done), int(divergences))


def tick(bar_id, part, phase, iteration, length, done, divergences):
    """Report to the bar ``bar_id`` every ``length // TICKS`` iterations and at the last.
    ``phase`` is 0 (warmup) or 1 (sampling); ``done`` and ``divergences`` are totals so far
    for this part, including earlier phases."""
    every = max(1, length // TICKS)
    due = ((iteration + 1) % every == 0) | (iteration + 1 == length)
    jax.lax.cond(
        due,
        lambda: jax.debug.callback(_report, bar_id, part, phase, done, divergences),
        lambda: None,
    )
