"""Recognition models and temporal detectors (torch only: no Ray, no I/O).

``MODELS`` maps recognizer names to builders, ``DETECTORS`` detector names to builders.
"""

from .detector import DETECTORS, DetectorOutput, soft_nms
from .recognizers import CLIP_MODELS, MODELS
from .resnet import ResNet, adapt_input_channels, inflate_state_dict, temporal_shift

__all__ = ["CLIP_MODELS", "DETECTORS", "MODELS", "DetectorOutput", "ResNet", "adapt_input_channels",
           "inflate_state_dict", "soft_nms", "temporal_shift"]
