"""U-Net assembly: one configurable encoder/decoder; variants are configs, not subclasses."""

from medseg.nets.unet import UNet

__all__ = ["UNet"]
