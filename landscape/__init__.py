"""landscape: loss-landscape analysis for deep learning.

The public API: train and load runs, the evaluation engine (:class:`Objective`), surfaces,
curvature, sharpness and gradient noise, and the comparison study. Figures live in
:mod:`landscape.plot`, analytic test functions in :mod:`landscape.toy`.
"""

from landscape.analysis.hessian import (  # noqa: E402
    analyze_hessian,
    curvature_map,
    hessian_eigenvalues,
    hessian_trace,
    load_hessian,
    spectral_density,
)
from landscape.analysis.measures import (  # noqa: E402
    REGISTRY,
    MeasureSettings,
    compute_measures,
)
from landscape.analysis.noise import gradient_noise, noise_scale_two_batch  # noqa: E402
from landscape.analysis.sharpness import (  # noqa: E402
    adaptive_sharpness,
    epsilon_sharpness,
    fisher_rao_norm,
    pac_bayes_flatness,
    sam_sharpness,
)
from landscape.data import Dataset, load_dataset  # noqa: E402
from landscape.errors import LandscapeError  # noqa: E402
from landscape.models import build_model  # noqa: E402
from landscape.objective import Objective  # noqa: E402
from landscape.params import ParamSpace  # noqa: E402
from landscape.study import demo, load_study, run_study  # noqa: E402
from landscape.surface import (  # noqa: E402
    compute_surface,
    interpolate,
    load_surface,
    plane,
    random_surface,
    trajectory,
)
from landscape.train import Run, load_run, train  # noqa: E402
from landscape.version import __version__ as __version__  # noqa: E402

__all__ = [
    "REGISTRY", "Dataset", "LandscapeError", "MeasureSettings", "Objective", "ParamSpace", "Run",
    "adaptive_sharpness", "compute_measures",
    "analyze_hessian", "build_model", "compute_surface", "curvature_map", "demo",
    "epsilon_sharpness", "fisher_rao_norm", "gradient_noise", "hessian_eigenvalues",
    "hessian_trace", "interpolate", "load_dataset", "load_hessian", "load_run", "load_study",
    "load_surface", "noise_scale_two_batch", "pac_bayes_flatness", "plane", "random_surface",
    "run_study", "sam_sharpness", "spectral_density", "train", "trajectory",
]
