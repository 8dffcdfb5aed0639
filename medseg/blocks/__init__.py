"""The block zoo: one file per family, one argument vocabulary.

Every block takes ``in_channels, out_channels, spatial_dims`` plus the shared keywords ``kernel_size, stride, norm,
act, dropout`` where they make sense, so a network can swap blocks by config alone.
"""

from medseg.blocks.channel_spatial import CBAM, ChannelAttention, SpatialAttention, SqueezeExcitation
from medseg.blocks.compose import BlockSequence
from medseg.blocks.conv import ConvNormAct, DoubleConv
from medseg.blocks.dilated import MultiBranchDilatedBlock
from medseg.blocks.dropblock import DropBlock, DropBlockConv
from medseg.blocks.dual_attention import ChannelSelfAttention, DualAttention, PositionAttention
from medseg.blocks.gates import AttentionGate
from medseg.blocks.grouped_gate import GroupedAttentionGate
from medseg.blocks.multikernel import MultiKernelDepthwiseConv, MultiKernelInvertedResidual, channel_shuffle
from medseg.blocks.multiscale import DeepSupervisionHeads, InputPyramid
from medseg.blocks.neighborhood import NeighborhoodAttention, NeighborhoodAttentionBlock
from medseg.blocks.res2net import Res2NetBlock
from medseg.blocks.residual import ResidualBlock

__all__ = [
    "CBAM",
    "AttentionGate",
    "BlockSequence",
    "ChannelAttention",
    "ChannelSelfAttention",
    "ConvNormAct",
    "DeepSupervisionHeads",
    "DoubleConv",
    "DropBlock",
    "DropBlockConv",
    "DualAttention",
    "GroupedAttentionGate",
    "InputPyramid",
    "MultiBranchDilatedBlock",
    "MultiKernelDepthwiseConv",
    "MultiKernelInvertedResidual",
    "NeighborhoodAttention",
    "NeighborhoodAttentionBlock",
    "PositionAttention",
    "Res2NetBlock",
    "ResidualBlock",
    "SpatialAttention",
    "SqueezeExcitation",
    "channel_shuffle",
]
