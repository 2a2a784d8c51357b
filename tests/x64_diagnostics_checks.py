"""Float64 checks of the diagnostics, run by ``test_x64.py`` in a subprocess
with ``JAX_ENABLE_X64=1``: every function equals ArviZ to 1e-6 relative (the
contract) on the arrays of ``test_diagnostics.py``, in float64, and the
summary's columns are float64. (Not collected on its own: its name does not
start with ``test_``.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.inference import diagnostics
import test_diagnostics as cases

pytestmark = pytest.mark.skipif(not jax.config.jax_enable_x64, reason="run by test_x64.py with JAX_ENABLE_X64=1")

RTOL = 1e-6


@pytest.mark.parametrize(
    "make", [lambda: cases.columns()[1], cases.one_chain, cases.event_shaped], ids=["cases", "one chain", "event shape"]
)
def test_every_function_matches_arviz_in_float64(make):
    x = jnp.asarray(make())
    assert x.dtype == jnp.float64
    cases.compare(x, RTOL)


def test_float32_draws_are_diagnosed_in_float64_when_x64_is_on():
    x = np.asarray(cases.columns()[1], np.float32)
    expected = cases.arviz_reference(cases.FUNCTIONS["ess_bulk"][1], x)
    computed = diagnostics.ess_bulk(x)
    assert computed.dtype == jnp.float64
    np.testing.assert_allclose(computed, expected, rtol=RTOL, equal_nan=True)


def test_summaries_are_float64():
    s = diagnostics.summary(cases.choice_map())
    assert all(values.dtype == np.float64 for values in s.table.values())
    names, x = cases.columns()
    np.testing.assert_allclose(diagnostics.summary(x).table["r_hat"], cases.arviz_reference(cases.FUNCTIONS["rhat"][1], x),
                               rtol=RTOL, equal_nan=True)
    weighted = diagnostics.summary({"a": jnp.arange(4.0)}, log_weights=jnp.log(jnp.arange(1.0, 5.0)))
    np.testing.assert_allclose(weighted.table["mcse_mean"], [np.sqrt(0.24)], rtol=1e-12)
    assert weighted.table["mean"].dtype == np.float64
