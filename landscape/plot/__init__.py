"""Publication figures from stored results: each function takes a result (a file path or a
loaded object) and an optional ``ax=``, and returns a matplotlib ``Figure`` in the house style
(:mod:`landscape.plot.style`); nothing is shown or saved (use :func:`save_figure`)."""

from landscape.plot.animation import animate, animate_toy, animate_trajectory
from landscape.plot.compare import plot_comparison, save_comparison
from landscape.plot.connect import plot_curve_plane, plot_paths, plot_stability
from landscape.plot.contours import (
    color_scale,
    plot_contour,
    plot_filled,
    plot_heatmap,
    plot_surface3d,
    plot_trajectory,
)
from landscape.plot.curves import curve_rise, plot_curve
from landscape.plot.spectrum import curvature_ratio, plot_density, plot_ratio
from landscape.plot.style import house_style, save_figure
from landscape.plot.toy import plot_toy_losses, plot_toy_paths
from landscape.plot.vtk import export_vtk

__all__ = ["animate", "animate_toy", "animate_trajectory", "color_scale", "curvature_ratio",
           "curve_rise", "export_vtk", "house_style",
           "plot_comparison", "plot_contour", "plot_curve", "plot_curve_plane", "plot_density",
           "plot_filled", "plot_paths", "plot_stability",
           "plot_heatmap", "plot_ratio", "plot_surface3d", "plot_toy_losses", "plot_toy_paths",
           "plot_trajectory", "save_comparison", "save_figure"]
