"""The block zoo: one file per family, one argument vocabulary.

Every block takes ``in_channels, out_channels, spatial_dims`` plus the shared keywords ``kernel_size, stride, norm,
act, dropout`` where they make sense, so a network can swap blocks by config alone.
"""

from medseg.blocks.conv import ConvNormAct, DoubleConv
from medseg.blocks.gates import AttentionGate
from medseg.blocks.multiscale import DeepSupervisionHeads, InputPyramid
from medseg.blocks.residual import ResidualBlock

__all__ = ["AttentionGate", "ConvNormAct", "DeepSupervisionHeads", "DoubleConv", "InputPyramid", "ResidualBlock"]
