"""Float64 under ``jax_enable_x64``: a representative part of the suite
(the GFI laws of densities and weights at float64 tolerances, and ``x64_checks.py``: importance, every
objective's estimate and gradient, ``fit``, the unconstraining transform, calibration's simulations;
``x64_diagnostics_checks.py``: the diagnostics against ArviZ; ``x64_smc_checks.py``: resampling, particle Gibbs, backward smoothing; ``x64_mcmc_checks.py``: NUTS on a
Gaussian process) runs in a subprocess with
``JAX_ENABLE_X64=1``, since the flag must be set before JAX starts."""

import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
FILES = ["x64_checks.py", "x64_diagnostics_checks.py", "x64_mcmc_checks.py", "x64_smc_checks.py", "test_gfi_laws.py"]
# Of the GFI laws, those that compare densities and weights with references at
# float64 tolerances, for every model case (30 tests; all 113 took 80 s here,
# and the rest check structure that float64 does not change).
GFI_LAWS = "simulate_density or generate_weight_is or regenerate_weight_is or not test_gfi_laws"


def test_the_float64_suite_passes():
    env = {**os.environ, "JAX_ENABLE_X64": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "-k", GFI_LAWS,
               *[str(HERE / f) for f in FILES]]
    run = subprocess.run(command, cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and " skipped" not in run.stdout, run.stdout[-2000:]
