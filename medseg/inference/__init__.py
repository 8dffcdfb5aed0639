"""Prediction: trained runs → preprocess like training → sliding window (+TTA, fold ensemble) → the input grid,
in bounded memory; many cases per call, each written atomically (docs/architecture.md)."""
