"""The low layers (formats, storage, synthetic data) must import without ray and torch."""

import subprocess
import sys

LOW_LAYERS = ["finegym_ray.dataset.manifest", "finegym_ray.dataset.labels", "finegym_ray.dataset.sampling",
              "finegym_ray.dataset.augment", "finegym_ray.charts", "finegym_ray.storage",
              "finegym_ray.synth.generate", "finegym_ray.synth.flow_pairs", "finegym_ray.video",
              "finegym_ray.preprocess.units",
              "finegym_ray.preprocess.clips", "finegym_ray.preprocess.local_copy", "finegym_ray.preprocess.config",
              "finegym_ray.config", "finegym_ray.lease", "finegym_ray.tune.config", "finegym_ray.tune.results",
              "finegym_ray.localize.features", "finegym_ray.video.files", "finegym_ray.video.check",
              "finegym_ray.localize.metric", "finegym_ray.localize.formats", "finegym_ray.localize.score"]
# The step library is what Tune trials, feature extraction and benchmarks share.
TORCH_ONLY = ["finegym_ray.models", "finegym_ray.train.steps"]
# What Ray Data's sampling workers import: torch would add seconds to each process start.
RAY_ONLY = ["finegym_ray.train.data", "finegym_ray.ray_connect"]

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('ray', 'torch'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_low_layers_import_without_ray_or_torch():
    code = BLOCK + "".join(f"import {m}\n" for m in LOW_LAYERS)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_models_import_without_ray():
    code = BLOCK.replace("('ray', 'torch')", "('ray',)") + "".join(f"import {m}\n" for m in TORCH_ONLY)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_sampling_code_imports_without_torch():
    code = BLOCK.replace("('ray', 'torch')", "('torch',)") + "".join(f"import {m}\n" for m in RAY_ONLY)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
