"""examples/smc_inference_scaling.py at smoke size: a tiny LM trained for
100 steps, budgets N = 1 and 4, sixteen small targets, eight runs each
(runs cost little: the time goes to compiling one program per budget). The
example's ``main`` runs once, printing and plotting included.

Besides shapes and ranges, two checks that can fail: the properly weighted
filter's final weights include the exact check of the answer, so a run is
right exactly when its estimate of Z (the probability that the model
answers correctly) is positive; and at N = 4 the properly weighted filter
solves more of the 128 runs than best-of-4 does. Measured at this size over
example seeds 0 to 3: 15, 19, 17 and 21 runs against 8, 7, 8 and 6 (at N =
1 both solve 0 to 4).
"""

import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))  # the example imports its helper module, examples/tiny_lm.py

import smc_inference_scaling  # noqa: E402

BUDGETS = (1, 4)
TARGETS = tuple(range(1, 33, 2))  # small targets: a model trained for 100 steps hits them now and then
SEEDS = 8
METHODS = smc_inference_scaling.METHODS


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("smc_inference_scaling")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        out = smc_inference_scaling.main(training_steps=100, budgets=BUDGETS, num_seeds=SEEDS, targets=TARGETS,
                                         output_dir=output_dir)  # fmt: skip
    return out, printed.getvalue(), output_dir


def test_outputs_have_their_shapes_and_ranges(study):
    out, _, _ = study
    assert set(out["correct"]) == set(METHODS) == set(out["accuracies"])
    for method in METHODS:
        correct = np.asarray(out["correct"][method], float)
        assert correct.shape == (len(BUDGETS), SEEDS, len(TARGETS)), method
        assert np.all((correct >= 0) & (correct <= 1)), method
        assert out["accuracies"][method].shape == (len(BUDGETS), len(TARGETS)), method
    assert out["log_z"].shape == (len(BUDGETS), SEEDS, len(TARGETS))
    assert np.all(out["log_z"] <= 1e-5)  # log of an estimated probability
    assert out["success_rates"].shape == (len(TARGETS),) and np.all((0 <= out["success_rates"]) & (out["success_rates"] <= 1))
    assert np.all(np.isfinite(out["losses"])) and out["losses"][-10:].mean() < out["losses"][:10].mean()


def test_properly_weighted_smc_is_right_exactly_when_its_z_is_positive(study):
    out, _, _ = study
    correct = out["correct"]["properly weighted SMC"]
    positive = np.isfinite(out["log_z"])
    np.testing.assert_array_equal(correct, positive)
    assert correct[1].any()  # not vacuous: some runs at N = 4 are right


def test_smc_beats_best_of_n_at_the_same_budget(study):
    out, _, _ = study
    smc_right = int(out["correct"]["properly weighted SMC"][1].sum())
    best_of_n_right = int(out["correct"]["best-of-N"][1].sum())
    assert smc_right > best_of_n_right, (smc_right, best_of_n_right)


def test_prints_the_table_and_saves_the_plot(study):
    out, printed, output_dir = study
    for budget in BUDGETS:
        row = next(line for line in printed.splitlines() if line.split()[:1] == [str(budget)])
        assert row.count("+-") == len(METHODS), row
    assert "total time" in printed
    png = Path(output_dir) / "smc_inference_scaling.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
