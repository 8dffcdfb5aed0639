"""Dataset discovery, checks, splits, MONAI pipelines, the LightningDataModule and synthetic data."""
