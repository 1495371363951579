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
from landscape.analysis.measures import (
    REGISTRY,
    Measure,
    MeasureSettings,
    compute_measures,
    measures_of_run,
)
from landscape.analysis.noise import NoiseResult, gradient_noise, noise_scale_two_batch
from landscape.analysis.sharpness import (
    MeasureResult,
    adaptive_sharpness,
    epsilon_sharpness,
    fisher_rao_norm,
    pac_bayes_flatness,
    sam_sharpness,
)

__all__ = [
    "CurvatureMap", "DensityResult", "EigenResult", "HessianReport", "TraceResult",
    "analyze_hessian", "curvature_map", "hessian_eigenvalues", "hessian_of_run", "hessian_trace",
    "load_hessian", "spectral_density",
    "REGISTRY", "Measure", "MeasureResult", "MeasureSettings", "NoiseResult",
    "adaptive_sharpness", "compute_measures", "measures_of_run",
    "epsilon_sharpness", "fisher_rao_norm", "gradient_noise", "noise_scale_two_batch",
    "pac_bayes_flatness", "sam_sharpness",
]
