"""examples/calibration.py at its smoke size: importance sampling and
mean-field VI (one simulation at a time: ``vi.fit`` cannot be vmapped) on
10 simulated data sets each, SBC and TARP on the same simulations, printed
and plotted. NUTS and tempered SMC are left out here: compiling them would
add some 15 s to a file that must stay under 15 s (NUTS's calibration is
tested in tests/test_calibration.py; the full example runs all four).
"""

import contextlib
import importlib.util
import io
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG = b"\x89PNG\r\n\x1a\n"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_calibration_example_checks_and_plots(tmp_path):
    example = load("calibration")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = example.main(num_simulations=10, smoke=True, names=("importance", "mean-field VI"), output_dir=tmp_path)
    text = printed.getvalue()
    assert set(results) == {"importance", "mean-field VI"}
    for name, (sbc, tarp) in results.items():
        assert sbc.names == ["mu", "tau", "z[0]", "z[1]", "z[2]", "z[3]"], sbc.names
        assert sbc.ranks.shape == (10, 6) and sbc.num_draws == 20 and tarp.ranks.shape == (10,)
        assert f"== {name} (" in text and sbc.summary() in text and tarp.summary() in text
    assert results["importance"][0].simulations.ess is None  # independent draws: no thinning
    assert (tmp_path / "calibration.png").read_bytes()[:8] == PNG
