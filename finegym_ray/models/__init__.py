"""Recognition models (torch only: no Ray, no I/O). ``MODELS`` maps names to builders."""

from .recognizers import CLIP_MODELS, MODELS
from .resnet import ResNet, adapt_input_channels, inflate_state_dict, temporal_shift

__all__ = ["CLIP_MODELS", "MODELS", "ResNet", "adapt_input_channels", "inflate_state_dict", "temporal_shift"]
