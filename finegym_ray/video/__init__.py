"""The video layer: probe and decode exact time windows, optical flow, JPEG bytes.

Plain functions over numpy arrays for the preprocessing stage to call; no ray or torch
(see docs/architecture.md). Units: seconds for times, frames for counts, pixels for sizes
and flow.
"""

from .decode import (
                     BACKENDS,
                     BOUNDARY_TOLERANCE_S,
                     Frames,
                     VideoError,
                     VideoInfo,
                     WindowDecoder,
                     decode_window,
                     probe,
                     resized_size,
)
from .encode import decode_jpeg, encode_jpeg, set_thread_limits
from .flow import FLOW_METHODS, FlowMethod, build_flow, compute_flow, dequantize_flow, quantize_flow

__all__ = [
    "BACKENDS", "BOUNDARY_TOLERANCE_S", "FLOW_METHODS", "FlowMethod", "Frames", "VideoError", "VideoInfo",
    "WindowDecoder", "build_flow", "compute_flow", "decode_jpeg", "decode_window", "dequantize_flow", "encode_jpeg",
    "probe", "quantize_flow", "resized_size", "set_thread_limits",
]
