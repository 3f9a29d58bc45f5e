"""Pretrained weights into a recognizer's backbone, read safely and reported loudly.

A file (local path or s3://) is read with ``torch.load(weights_only=True)``, so a
checkpoint from a shared bucket cannot run code, and its SHA-256 is taken from the same
bytes. The usual nesting is unwrapped: a ``state_dict`` or ``model`` entry (mmaction2's
checkpoints, finegym-ray's own ``state.pt``), the ``module.`` of DataParallel and DDP,
and a recognizer's ``backbone.`` (mmaction2's, ours) or ``base_model.`` (TSN's and TRN's
PyTorch models), outside which everything (``cls_head.``, ``head.``, ``new_fc.``,
``data_preprocessor.``, ...) is left out on purpose. The model's own names (of
``models/``) and two more naming schemes:

- torchvision's, as the ImageNet ResNets and our own ResNet name their tensors:
  ``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.bn1``, ``layer1.0.downsample.0``,
  and its ImageNet VGG-16 and our ActionVLAD's: ``features.0`` ... ``features.28``;
  without a nest, ``fc`` (or Cadene's ``last_linear``, VGG's ``classifier``) is the
  classifier.
- mmaction2's, as its TSN, TSM, I3D and NL-I3D Kinetics-400 checkpoints name them:
  each conv and its BN one module (``conv1.conv``, ``conv1.bn``, ``layer1.0.conv2.conv``,
  ``layer1.0.conv2.bn``, ``layer1.0.downsample.conv``, ``.bn``), TSM's shift wrapping
  a block's first conv (``layer1.0.conv1.conv.net``), non-local blocks as
  ``layer2.1.non_local_block`` with ``theta.conv``, ``phi.0.conv``, ``g.0.conv`` (behind
  their sub-sampling pool), ``conv_out.conv`` and ``conv_out.bn``.
- Caffe's, as TSN, mmaction and mmaction2 (``bninception_caffe``) and Cadene distribute
  ImageNet BN-Inception and their BN-Inception checkpoints name it: a conv and its BN side
  by side (``conv1_7x7_s2``, ``conv1_7x7_s2_bn``, ``inception_3a_double_3x3_reduce``,
  ``inception_3a_double_3x3_reduce_bn``). These weights were trained on Caffe's input,
  and their first conv is converted to this package's as they load
  (``models/bninception.py``: ``from_caffe_input``).

Adapted to the model: 2-D kernels inflated where it holds 3-D ones (I3D from ImageNet
or a TSN), and an RGB first conv averaged over its channels and repeated for flow input
(TSN's cross-modality initialisation).

A load that leaves part of the backbone at its random initialisation (tensors missing
from the file, or of another shape) is refused unless ``strict`` is false; a file of
which no tensor fits is refused always. Non-local blocks that a file holds none of (an
ImageNet ResNet, a plain I3D) are new by design and keep their initialisation, which
leaves the network's function unchanged. Counters of BN batches are not counted: they
hold no learned value. No Ray here.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import storage
from ..errors import InputError
from ..models.bninception import CAFFE_FLOW_BOUND, CAFFE_FLOW_MEAN, CAFFE_MEAN_BGR, STEM, from_caffe_input
from ..models.recognizers import FLOW_SCALE_PX, IMAGENET_MEAN, IMAGENET_STD
from ..models.resnet import adapt_input_channels, inflate_state_dict

NESTS = ("state_dict", "model")
# Where a recognizer keeps its backbone: mmaction2's and ours, TSN's and TRN's PyTorch models.
BACKBONE_NESTS = ("backbone.", "base_model.")
# An ImageNet network's classifier: torchvision's ResNets', Cadene's BN-Inception, torchvision's VGG.
CLASSIFIERS = ("fc.", "last_linear.", "classifier.")
BN_COUNTER = "num_batches_tracked"
# mmaction2's name -> ours, first match; names that match none are taken as they are.
MMACTION2 = [(re.compile(p), r) for p, r in (
    (r"^conv1\.conv\.", "conv1."),
    (r"^conv1\.bn\.", "bn1."),
    (r"^(layer\d+\.\d+)\.conv(\d)\.conv\.(net\.)?", r"\1.conv\2."),
    (r"^(layer\d+\.\d+)\.conv(\d)\.bn\.", r"\1.bn\2."),
    (r"^(layer\d+\.\d+)\.downsample\.conv\.", r"\1.downsample.0."),
    (r"^(layer\d+\.\d+)\.downsample\.bn\.", r"\1.downsample.1."),
    (r"^(layer\d+\.\d+)\.non_local_block\.(theta|phi|g)\.(0\.)?conv\.", r"\1.non_local.\2."),
    (r"^(layer\d+\.\d+)\.non_local_block\.conv_out\.conv\.", r"\1.non_local.out."),
    (r"^(layer\d+\.\d+)\.non_local_block\.conv_out\.bn\.", r"\1.non_local.bn."),
)]
# Caffe's BN-Inception name -> ours: whole names, which ours (one more level) never match.
CAFFE = [(re.compile(p), r) for p, r in (
    (rf"^({'|'.join(STEM)})_bn\.(\w+)$", r"\1.bn.\2"),
    (rf"^({'|'.join(STEM)})\.(weight|bias)$", r"\1.conv.\2"),
    (r"^(inception_\d[a-e])_(\w+?)_bn\.(\w+)$", r"\1.\2.bn.\3"),
    (r"^(inception_\d[a-e])_(\w+)\.(weight|bias)$", r"\1.\2.conv.\3"),
)]
RULES = [("mmaction2", p, r) for p, r in MMACTION2] + [("caffe", p, r) for p, r in CAFFE]
CHUNK = 4 << 20


@dataclass
class LoadReport:
    """What one load did. Tensor names are the model's (after translation), except
    ``unexpected`` and ``left_out``, which are the file's."""

    uri: str
    sha256: str
    naming: str  # the file's: the model's own ("torchvision", "finegym-ray"), "mmaction2" or "caffe"
    needed: int  # tensors the backbone takes from a file (BN counters and new blocks aside)
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "name (file shape; model shape)"
    unexpected: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every tensor the backbone needs came from the file, in its shape."""
        return not self.missing and not self.mismatched

    def text(self) -> str:
        """The report as printed: one line per kind of finding."""
        lines = [f"pretrained weights {self.uri}", f"  sha256 {self.sha256}", f"  naming {self.naming}",
                 f"  loaded {len(self.loaded)} of {self.needed} backbone tensors; missing {_names(self.missing)}; "
                 f"unexpected {_names(self.unexpected)}; shape-mismatched {_names(self.mismatched)}",
                 f"  left out on purpose (outside the backbone: the classifier and the like): {_names(self.left_out)}"]
        if self.adapted:
            lines.append("  adapted: " + "; ".join(self.adapted))
        if self.new:
            blocks = sorted({n.split(".non_local.")[0] for n in self.new})
            lines.append(f"  new in this model, kept at their initialisation: non-local blocks of {_names(blocks)}")
        return "\n".join(lines)

    def record(self) -> dict:
        """What a run records of the load (its checkpoints' meta.json): counts, not names."""
        return {"uri": self.uri, "sha256": self.sha256, "naming": self.naming, "loaded": len(self.loaded),
                "needed": self.needed, "missing": len(self.missing), "mismatched": len(self.mismatched),
                "unexpected": len(self.unexpected), "left_out": len(self.left_out), "new": len(self.new)}


def _names(names: list[str], limit: int = 4) -> str:
    """``names`` counted and listed up to ``limit``: "0", "2 (a, b)", "9 (a, b, c, d, ...)"."""
    if not names:
        return "0"
    more = ", ..." if len(names) > limit else ""
    return f"{len(names)} ({', '.join(names[:limit])}{more})"


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a local file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def read_state(uri: str, *, sha256: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """(the state dict in the file at ``uri``, nesting and ``module.`` unwrapped; the
    file's SHA-256). ``sha256``: the digest the file must have (a run's record of the
    weights it checked), InputError otherwise."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "weights.pt")
        storage.download_file(uri, local)
        digest = file_sha256(local)
        if sha256 and digest != sha256:
            raise InputError(f"{uri}: its SHA-256 is {digest}, but this run checked weights of {sha256} there: the "
                             f"file changed since; train under another name to start from the new one")
        try:
            obj = torch.load(local, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise InputError(f"{uri}: holds Python objects besides tensors, which loading with weights_only refuses "
                             f"({str(e).splitlines()[0]}); if you trust the file, save its state dict alone: "
                             f"torch.save(torch.load(PATH, weights_only=False)['state_dict'], OUT)") from None
        except (RuntimeError, EOFError) as e:
            raise InputError(f"{uri}: not a file torch.load reads ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return _unwrap(obj, uri), digest


def _unwrap(obj, uri: str) -> dict[str, torch.Tensor]:
    """The state dict inside ``obj`` (see the module docstring), ``module.`` dropped."""
    while isinstance(obj, dict):
        inner = next((obj[k] for k in NESTS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{uri}: holds no state dict (a mapping of names to tensors), but {type(obj).__name__}")
    other = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if other:
        raise InputError(f"{uri}: not a state dict: {_names([str(k) for k in other])} hold no tensor")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def translate(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                                    str | None]:
    """(backbone tensors under our names, tensors left out on purpose under the file's
    names, the naming scheme translated: "mmaction2", "caffe" or None for names taken
    as they are): a backbone nest stripped where the file has one (the rest is left
    out), else an ImageNet classifier left out; mmaction2's and Caffe's names translated."""
    nest = next((p for p in BACKBONE_NESTS if any(k.startswith(p) for k in state)), None)
    if nest:
        backbone = {k.removeprefix(nest): v for k, v in state.items() if k.startswith(nest)}
        left_out = {k: v for k, v in state.items() if not k.startswith(nest)}
    else:
        backbone = {k: v for k, v in state.items() if not k.startswith(CLASSIFIERS)}
        left_out = {k: v for k, v in state.items() if k.startswith(CLASSIFIERS)}
    out, naming = {}, None
    for name, value in backbone.items():
        for scheme, pattern, replacement in RULES:
            renamed = pattern.sub(replacement, name, count=1)
            if renamed != name:
                name, naming = renamed, scheme
                break
        out[name] = value
    return out, left_out, naming


def _from_caffe_input(state: dict[str, torch.Tensor], key: str) -> tuple[dict[str, torch.Tensor], str]:
    """``state`` with its first conv (``key`` and its bias) converted from Caffe's input
    to this package's, and the report's line for it ("" where the file has no first
    conv)."""
    bias_key = key.removesuffix("weight") + "bias"
    if key not in state or bias_key not in state:
        return state, ""
    weight, bias = from_caffe_input(state[key], state[bias_key], rgb_mean=IMAGENET_MEAN, rgb_std=IMAGENET_STD,
                                    flow_scale=FLOW_SCALE_PX)
    if weight.shape[1] == 3:
        mean = ", ".join(f"{m:g}" for m in CAFFE_MEAN_BGR)
        line = (f"first conv converted from Caffe's input (BGR pixels 0-255 less {mean}) to RGB normalised with "
                f"ImageNet's mean and std")
    else:
        line = (f"first conv converted from TSN's flow images (0-255 for -{CAFFE_FLOW_BOUND:g} to {CAFFE_FLOW_BOUND:g} "
                f"pixels, less {CAFFE_FLOW_MEAN:g}) to flow in pixels / {FLOW_SCALE_PX:g}")
    return {**state, key: weight, bias_key: bias}, line


def load_pretrained(backbone: nn.Module, uri: str, *, strict: bool = True, sha256: str | None = None) -> LoadReport:
    """Load the weights at ``uri`` into ``backbone`` (a ResNet, BNInception or VGG16 of models/)
    and return the report. Raises InputError for a file that is unsafe, not a state
    dict, not the ``sha256`` given, fits no tensor, or (``strict``) leaves any tensor of
    the backbone unloaded; nothing is loaded then."""
    state, digest = read_state(uri, sha256=sha256)
    state, left_out, naming = translate(state)
    naming = naming or backbone.NAMING
    target = backbone.state_dict()
    adapted = []
    key = backbone.FIRST_CONV
    first = target.get(key)
    theirs = state.get(key)
    if first is not None and theirs is not None and theirs.shape[1] == 3 and first.shape[1] != 3:
        state = adapt_input_channels(state, first.shape[1], key)
        adapted.append(f"first conv averaged over its 3 RGB channels and repeated to {first.shape[1]}")
    if naming == "caffe":
        state, line = _from_caffe_input(state, key)
        adapted += [line] if line else []
    inflated = inflate_state_dict(state, backbone)
    count = sum(1 for k, v in inflated.items() if v.dim() != state[k].dim())
    if count:
        adapted.append(f"{count} 2-D kernels inflated to 3-D")
    state = inflated

    has_non_local = any(".non_local." in k for k in state)
    needed = [k for k in target if not k.endswith(BN_COUNTER)]
    new = [k for k in needed if ".non_local." in k and not has_non_local]
    needed = [k for k in needed if k not in new]
    fitting = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    report = LoadReport(
        uri=uri, sha256=digest, naming=naming, needed=len(needed), new=new, adapted=adapted,
        loaded=[k for k in needed if k in fitting],
        missing=[k for k in needed if k not in state],
        mismatched=[f"{k} (file {tuple(v.shape)}; model {tuple(target[k].shape)})" for k, v in state.items()
                    if k in target and k not in fitting],
        unexpected=[k for k in state if k not in target], left_out=sorted(left_out))
    if not report.loaded:
        raise InputError(f"{uri}: no tensor fits this {type(backbone).__name__} backbone ({naming} names; "
                         f"missing {_names(report.missing)}; unexpected {_names(report.unexpected)}; "
                         f"shape-mismatched {_names(report.mismatched)})")
    if strict and not report.complete:
        raise InputError(f"{uri}: fits {len(report.loaded)} of the backbone's {report.needed} tensors (missing "
                         f"{_names(report.missing)}; shape-mismatched {_names(report.mismatched)}): refused, as "
                         f"the rest would train from its random initialisation; pretrained_strict=false loads what "
                         f"fits")
    backbone.load_state_dict(fitting, strict=False)
    return report
