"""medseg.inference (see ARCHITECTURE.md)."""
