"""Timing helpers: interleaved repeats, so drift on a shared machine hits every system alike."""

import time

import jax
import numpy as np

__all__ = ["timed", "interleaved", "summary", "machine_description"]


def timed(fn, *args):
    """``(seconds, output)`` of one call, waiting for the result."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, out


def interleaved(calls, repeats):
    """Run ``calls[name](repeat_index)`` for every name inside each repeat,
    rotating the order each repeat. Returns ``{name: [seconds]}`` and the last outputs."""
    names = list(calls)
    times, last = {name: [] for name in names}, {}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            last.pop(name, None)  # free the previous output before the next call
            seconds, last[name] = timed(calls[name], repeat)
            times[name].append(seconds)
    return times, last


def summary(seconds):
    """Median and the interquartile range, in seconds."""
    q1, median, q3 = np.percentile(seconds, [25, 50, 75])
    return median, q3 - q1


def machine_description():
    import os
    import platform

    import numpyro

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {jax.devices()[0].platform}; Python {platform.python_version()}, "
        f"jax {jax.__version__}, numpyro {numpyro.__version__}"
    )
