"""Pictures of runs and predictions: training curves and image/label overlays (matplotlib, Agg canvas)."""

from medseg.viz._figure import new_figure, save_png
from medseg.viz.curves import plot_training_curves
from medseg.viz.overlay import save_overlay

__all__ = ["new_figure", "plot_training_curves", "save_overlay", "save_png"]
