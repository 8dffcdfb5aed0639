"""medseg.evaluation (see ARCHITECTURE.md)."""
