"""landscape: loss-landscape analysis for deep learning.

The public API: train and load runs, the evaluation engine (:class:`Objective`), surfaces,
curvature, sharpness and gradient noise, and the comparison study. Figures live in
:mod:`landscape.plot`, analytic test functions in :mod:`landscape.toy`.
"""

from importlib import import_module
from typing import Any

from landscape.version import __version__ as __version__

# public name -> its module, imported on first use (PEP 562) so that `import landscape` and
# `landscape --help` need no torch
_SOURCES = {
    "landscape.analysis.hessian": ("analyze_hessian", "curvature_map", "hessian_eigenvalues",
        "hessian_trace", "load_hessian", "spectral_density"),
    "landscape.analysis.measures": ("REGISTRY", "MeasureSettings", "compute_measures"),
    "landscape.analysis.noise": ("gradient_noise", "noise_scale_two_batch"),
    "landscape.analysis.sharpness": ("adaptive_sharpness", "epsilon_sharpness", "fisher_rao_norm",
        "pac_bayes_flatness", "sam_sharpness"),
    "landscape.analysis.track": ("Track", "load_track"),
    "landscape.connect.align": ("align",),
    "landscape.connect.barrier": ("barrier", "connect_runs", "curve_plane", "load_path"),
    "landscape.connect.curves": ("fit_curve",),
    "landscape.connect.stability": ("instability", "load_stability"),
    "landscape.data": ("Dataset", "load_dataset"),
    "landscape.errors": ("LandscapeError",),
    "landscape.models": ("build_model",),
    "landscape.objective": ("Objective",),
    "landscape.params": ("ParamSpace",),
    "landscape.study": ("demo", "load_study", "run_study"),
    "landscape.surface": ("compute_surface", "interpolate", "load_surface", "plane",
        "random_surface", "trajectory"),
    "landscape.runs": ("Run", "load_run"),
    "landscape.report": ("write_report",),
    "landscape.training": ("train",),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = [
    "REGISTRY", "Dataset", "LandscapeError", "MeasureSettings", "Objective", "ParamSpace", "Run",
    "adaptive_sharpness", "compute_measures",
    "analyze_hessian", "build_model", "compute_surface", "curvature_map", "demo",
    "epsilon_sharpness", "fisher_rao_norm", "gradient_noise", "hessian_eigenvalues",
    "hessian_trace", "interpolate", "load_dataset", "load_hessian", "load_run", "load_study",
    "load_surface", "noise_scale_two_batch", "pac_bayes_flatness", "plane", "random_surface",
    "run_study", "sam_sharpness", "spectral_density", "train", "trajectory",
    "Track", "load_track", "write_report",
    "align", "barrier", "connect_runs", "curve_plane", "fit_curve", "instability", "load_path",
    "load_stability",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and keep the name here."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'landscape' has no attribute {name!r}")
    value = getattr(import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

