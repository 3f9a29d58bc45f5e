"""The video layer imports without ray or torch, and without decord until it is used."""

import subprocess
import sys

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('ray', 'torch'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_video_layer_imports_without_ray_torch_or_decord():
    code = BLOCK + (
        "import finegym_ray.video, finegym_ray.video.decode, finegym_ray.video.flow, finegym_ray.video.encode\n"
        "assert 'decord' not in sys.modules, 'decord is imported only by its backend'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
