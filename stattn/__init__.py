"""stattn: local-awareness spatiotemporal attention (temporal + grouped spatial) and the DSTA layers."""
from ._version import __version__
from .ops import grouped_attention, temporal_attention
from .skeletons import COCO17, POSETRACK, Skeleton

__all__ = ["__version__", "temporal_attention", "grouped_attention", "Skeleton", "POSETRACK", "COCO17"]
