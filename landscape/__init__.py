"""landscape: loss-landscape analysis for deep learning."""

from landscape.analysis.hessian import (
    analyze_hessian,
    curvature_map,
    hessian_eigenvalues,
    hessian_trace,
    load_hessian,
    spectral_density,
)
from landscape.analysis.noise import gradient_noise, noise_scale_two_batch
from landscape.analysis.sharpness import (
    adaptive_sharpness,
    epsilon_sharpness,
    fisher_rao_norm,
    pac_bayes_flatness,
    sam_sharpness,
)
from landscape.errors import LandscapeError
from landscape.train import Run, load_run, train

__all__ = ["LandscapeError"]
__all__ += ["Run", "load_run", "train"]
__all__ += ["analyze_hessian", "curvature_map", "hessian_eigenvalues", "hessian_trace",
            "load_hessian", "spectral_density"]
__all__ += ["adaptive_sharpness", "epsilon_sharpness", "fisher_rao_norm", "gradient_noise",
            "noise_scale_two_batch", "pac_bayes_flatness", "sam_sharpness"]
__version__ = "0.1.0"
