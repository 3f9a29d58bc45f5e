"""The video layer loads decord only when its backend is used (ray and torch blocked too)."""

import subprocess
import sys

from tests.test_layers import BLOCK


def test_video_layer_imports_without_ray_torch_or_decord():
    code = BLOCK + (
        "import finegym_ray.video, finegym_ray.video.decode, finegym_ray.video.flow, finegym_ray.video.encode\n"
        "assert 'decord' not in sys.modules, 'decord is imported only by its backend'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
