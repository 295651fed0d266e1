"""Neural-network layers built on the public stattn functionals: attention layers and the DSTA modules.

- :class:`TemporalAttention`, :class:`GroupedSpatialAttention`, :class:`GlobalAttention`,
  :class:`LocalAwarenessBlock`, :class:`DropPath`: building blocks;
- :class:`JointCentricFeatureDecoder` (JFD), :class:`SpaceTimeDecoupling` (STD): DSTA's two modules;
- :class:`RealNVP`, :class:`RLELoss`, :class:`RegressionHead`: the RLE regression head and loss.
"""
from .attention import GlobalAttention, GroupedSpatialAttention, LocalAwarenessBlock, TemporalAttention
from .drop import DropPath, drop_path
from .jfd import JointCentricFeatureDecoder
from .rle import RealNVP, RegressionHead, RegressionOutput, RLELoss
from .std import SpaceTimeDecoupling

__all__ = [
    "TemporalAttention",
    "GroupedSpatialAttention",
    "GlobalAttention",
    "LocalAwarenessBlock",
    "DropPath",
    "drop_path",
    "JointCentricFeatureDecoder",
    "SpaceTimeDecoupling",
    "RealNVP",
    "RLELoss",
    "RegressionHead",
    "RegressionOutput",
]
