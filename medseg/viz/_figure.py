"""Figures without pyplot (no global state, always the Agg canvas) and atomic PNG writes."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medseg.fileio import atomic_path


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` × ``height`` inches (constrained layout) drawn by the Agg canvas, whatever pyplot uses."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as PNG via a temporary file in the same folder and an atomic rename.

    Args:
        fig: the figure.
        path: destination; its folder is created.
        dpi: resolution.

    Returns:
        The destination path.
    """
    path = Path(path)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path
