"""Pictures of runs and predictions: training curves, per-case Dice, method comparisons and image/label overlays
(matplotlib, Agg canvas). Every picture medseg draws lives in this package."""

from medseg.viz._figure import new_figure, save_png
from medseg.viz.curves import plot_training_curves
from medseg.viz.overlay import save_overlay
from medseg.viz.summary import plot_methods, plot_per_case_dice

__all__ = ["new_figure", "plot_methods", "plot_per_case_dice", "plot_training_curves", "save_overlay", "save_png"]
