"""``medseg plan``: a dataset fingerprint, and from it an nnU-Net-style configuration (docs/planning.md)."""
