"""The VAE example (examples/vae_digits.py), briefly: a short ELBO run on a
few digits improves its objective, the IWELBO(K) estimator of the trained
model lies above its ELBO (as it must, on average), the same for the flow
encoder, and the plots draw.

The full example trains for thousands of steps; here 60 steps on 256 images
keep the test to seconds (most of it is compilation). The IWELBO(20)-minus-ELBO
gap on held-out images is checked against K standard errors of its mean over
images (seeds fixed); at these parameters it is about 0.97 nats per image
(7.7 standard errors) with the normal encoder and 0.46 (6.3 standard errors)
with the flow encoder, whose ELBO is the tighter. The objective rises from
about -45 to -27 (normal) and -28 (flow) nats per image.

Time (pytest, 2-core CPU): about 20 s, of which the flow encoder's test is
9-10 s (the file took 9.7 s without it).
"""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ppl.inference import vi

K = 4.5
NUM_IMAGES = 256
NUM_STEPS = 60

_path = Path(__file__).resolve().parents[1] / "examples" / "vae_digits.py"
_spec = importlib.util.spec_from_file_location("vae_digits", _path)
vae_digits = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vae_digits)


class IwelboMinusElbo:
    """One estimate of IWELBO(K) minus one of the ELBO, in one program (one
    compilation instead of two, which keeps the test short)."""

    def __init__(self, iwelbo, elbo):
        self.iwelbo, self.elbo = iwelbo, elbo

    def estimate(self, key, params, observations, image):
        key_iwelbo, key_elbo = jax.random.split(key)
        iwelbo = self.iwelbo.estimate(key_iwelbo, params, observations, image)
        return iwelbo - self.elbo.estimate(key_elbo, params, observations, image)


def short_run(guide, params=None):
    """NUM_STEPS of the ELBO on NUM_IMAGES training images; returns the
    FitResult and per-image IWELBO(20) minus ELBO on as many test images."""
    (train_images, _), (test_images, _) = vae_digits.load_data()
    images = jnp.asarray(train_images[:NUM_IMAGES])
    objective = vi.per_datum(vi.elbo(vae_digits.model, guide), in_axes=(0, 0))
    result, _ = vae_digits.train(objective, images, NUM_STEPS, seed=0, progress=False, params=params)
    gap = IwelboMinusElbo(vi.iwelbo(vae_digits.model, guide, 20), vi.elbo(vae_digits.model, guide))
    estimate = vae_digits.per_image_estimator(gap, chunk_size=NUM_IMAGES)
    return result, estimate(result.params, jnp.asarray(test_images[:NUM_IMAGES]), jax.random.key(1))


def assert_improves_and_iwelbo_is_above_elbo(result, difference):
    per_image = result.history / NUM_IMAGES
    assert result.history.shape == (NUM_STEPS,)
    assert per_image[-10:].mean() > per_image[:10].mean() + 5.0, (per_image[:10].mean(), per_image[-10:].mean())
    standard_error = difference.std(ddof=1) / np.sqrt(len(difference))
    assert difference.mean() > K * standard_error, (difference.mean(), standard_error)


def test_short_training_improves_and_iwelbo_is_above_elbo():
    images = jnp.asarray(vae_digits.load_data()[0][0][:1])
    guide = vae_digits.make_guide(vae_digits.init_params(0), images[0])
    assert_improves_and_iwelbo_is_above_elbo(*short_run(guide))


def test_the_flow_encoder_trains_and_its_iwelbo_is_above_its_elbo():
    images = jnp.asarray(vae_digits.load_data()[0][0][:3])
    guide = vae_digits.make_flow_guide(vae_digits.init_params(0), images[0])
    params = vae_digits.init_flow_params(0, guide)
    same = jax.tree.map(jnp.array_equal, nnx.state(params["decoder"]), nnx.state(vae_digits.init_params(0)["decoder"]))
    assert all(jax.tree.leaves(same))  # both encoders start with the same decoder
    result, difference = short_run(guide, params)
    assert_improves_and_iwelbo_is_above_elbo(result, difference)
    reconstructions = vae_digits.reconstruct(result.params, images)
    assert reconstructions.shape == (3, 64) and np.all((reconstructions >= 0) & (reconstructions <= 1))


def test_plots_draw(tmp_path):
    random = np.random.default_rng(0)
    histories = {"ELBO": -30.0 + random.normal(size=40), "IWELBO(5)": -29.0 + random.normal(size=40)}
    vae_digits.plot_curves(tmp_path / "curves.png", histories, data_size=1)
    images = random.uniform(size=(10, 64))
    vae_digits.plot_reconstructions(tmp_path / "reconstructions.png", images, {"ELBO": images, "IWELBO(5)": images})
    vae_digits.plot_samples(tmp_path / "samples.png", {"ELBO": random.uniform(size=(16, 64))})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "reconstructions.png", "samples.png"]
