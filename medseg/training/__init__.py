"""LightningModule, losses and metrics."""
