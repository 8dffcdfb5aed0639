"""medseg: U-Net-family segmentation of 3D medical volumes, assembled from a block zoo by Hydra configs."""

__version__ = "0.1.0"
