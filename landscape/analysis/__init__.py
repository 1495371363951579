"""Analyses of one model at one point: curvature (Hessian), sharpness, gradient noise."""

from landscape.analysis.hessian import (
    CurvatureMap,
    DensityResult,
    EigenResult,
    HessianReport,
    TraceResult,
    analyze_hessian,
    curvature_map,
    hessian_eigenvalues,
    hessian_of_run,
    hessian_trace,
    load_hessian,
    spectral_density,
)
from landscape.analysis.noise import NoiseResult, gradient_noise, noise_scale_two_batch
from landscape.analysis.sharpness import (
    MeasureResult,
    adaptive_sharpness,
    compute_sharpness,
    epsilon_sharpness,
    fisher_rao_norm,
    pac_bayes_flatness,
    sam_sharpness,
)

__all__ = [
    "CurvatureMap", "DensityResult", "EigenResult", "HessianReport", "TraceResult",
    "analyze_hessian", "curvature_map", "hessian_eigenvalues", "hessian_of_run", "hessian_trace",
    "load_hessian", "spectral_density",
    "MeasureResult", "NoiseResult", "adaptive_sharpness", "compute_sharpness",
    "epsilon_sharpness", "fisher_rao_norm", "gradient_noise", "noise_scale_two_batch",
    "pac_bayes_flatness", "sam_sharpness",
]
