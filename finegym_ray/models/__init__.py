"""Recognition models and temporal detectors (torch only: no Ray, no I/O).

``MODELS`` maps recognizer names to builders, ``POSE_MODELS`` skeleton recognizers' names
to theirs, ``HEATMAP_MODELS`` those of recognizers of pose heatmap volumes, ``DETECTORS``
detector names to theirs.
"""

from .bninception import BNInception
from .detector import DETECTORS, DetectorOutput, soft_nms
from .posec3d import HEATMAP_MODELS, PoseC3D
from .recognizers import BACKBONE_MODELS, BACKBONES, CLIP_MODELS, MODELS
from .resnet import ResNet, adapt_input_channels, inflate_state_dict, temporal_shift
from .stgcn import POSE_MODELS, STGCN

__all__ = ["BACKBONES", "BACKBONE_MODELS", "BNInception", "CLIP_MODELS", "DETECTORS", "HEATMAP_MODELS", "MODELS",
           "DetectorOutput", "POSE_MODELS", "PoseC3D", "ResNet", "STGCN", "adapt_input_channels", "inflate_state_dict",
           "soft_nms", "temporal_shift"]
