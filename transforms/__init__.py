"""Program transformations: ``import ppl.transforms``.

``stage`` turns a generative function into a jaxpr whose random choices are
``sample_p`` equations (each one a ``Site`` to a transformation).
``evaluate`` runs a jaxpr through ``Rules``, a rule per primitive; the
interpreters here are rule sets over it. ``interpret`` / ``run_staged`` run
a staged program back with GFI semantics; ``expectation`` (ADEV) turns a
program that returns a real number into unbiased estimators of its expected
value and gradient; ``unconstrain`` turns a model and its observations into
a log density on R^n (with Jacobians), for HMC, NUTS and VI.
"""

from ppl.factor_primitive import FactorSite
from ppl.sample_primitive import Site
from ppl.transforms.evaluate import Rules, evaluate
from ppl.transforms.interpret import Recorder, StagedRun, interpret, run_staged
from ppl.transforms.adev import Expectation, expectation
from ppl.transforms.dependence import depends_on_first_input
from ppl.transforms.strategies import Enumerate, MeasureValued, Reinforce, Reparam
from ppl.transforms.rejection_reparam import RejectionReparam
from ppl.transforms.auto_strategies import StrategyChoice, candidate_strategies, choose_strategies
from ppl.transforms.stage import StagedProgram, choice_sites, sample_sites, stage
from ppl.transforms.unconstrain import Latent, Unconstrained, unconstrain

__all__ = [
    "stage",
    "StagedProgram",
    "sample_sites",
    "choice_sites",
    "Site",
    "FactorSite",
    "evaluate",
    "Rules",
    "interpret",
    "run_staged",
    "Recorder",
    "StagedRun",
    "depends_on_first_input",
    "expectation",
    "Expectation",
    "Reparam",
    "Reinforce",
    "Enumerate",
    "MeasureValued",
    "RejectionReparam",
    "choose_strategies",
    "candidate_strategies",
    "StrategyChoice",
    "unconstrain",
    "Unconstrained",
    "Latent",
]
