"""Pretrained weights into a recognizer's backbone, read safely and reported loudly.

A file (local path or s3://) is read with ``torch.load(weights_only=True)``, so a
checkpoint from a shared bucket cannot run code, and its SHA-256 is taken from the same
bytes. The usual nesting is unwrapped: a ``state_dict`` or ``model`` entry (mmaction2's
checkpoints, finegym-ray's own ``state.pt``), the ``module.`` of DataParallel and DDP,
and a recognizer's ``backbone.``, outside which everything (``cls_head.``, ``head.``,
``data_preprocessor.``, ...) is left out on purpose. Two naming schemes:

- torchvision's, as the ImageNet ResNets and our own ResNet name their tensors:
  ``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.bn1``, ``layer1.0.downsample.0``;
  without ``backbone.``, ``fc`` is the classifier.
- mmaction2's, as its TSN, TSM, I3D and NL-I3D Kinetics-400 checkpoints name them:
  each conv and its BN one module (``conv1.conv``, ``conv1.bn``, ``layer1.0.conv2.conv``,
  ``layer1.0.conv2.bn``, ``layer1.0.downsample.conv``, ``.bn``), TSM's shift wrapping
  a block's first conv (``layer1.0.conv1.conv.net``), non-local blocks as
  ``layer2.1.non_local_block`` with ``theta.conv``, ``phi.0.conv``, ``g.0.conv`` (behind
  their sub-sampling pool), ``conv_out.conv`` and ``conv_out.bn``.

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
from ..models.resnet import adapt_input_channels, inflate_state_dict

NESTS = ("state_dict", "model")
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
CHUNK = 4 << 20


@dataclass
class LoadReport:
    """What one load did. Tensor names are the model's (after translation), except
    ``unexpected`` and ``left_out``, which are the file's."""

    uri: str
    sha256: str
    naming: str  # "torchvision" or "mmaction2"
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


def translate(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], str]:
    """(backbone tensors under our names, tensors left out on purpose under the file's
    names, the naming scheme): ``backbone.`` stripped where the file has it (the rest is
    left out), else torchvision's ``fc`` left out; mmaction2's names translated."""
    if any(k.startswith("backbone.") for k in state):
        backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        left_out = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    else:
        backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
        left_out = {k: v for k, v in state.items() if k.startswith("fc.")}
    out, naming = {}, "torchvision"
    for name, value in backbone.items():
        for pattern, replacement in MMACTION2:
            renamed = pattern.sub(replacement, name, count=1)
            if renamed != name:
                name, naming = renamed, "mmaction2"
                break
        out[name] = value
    return out, left_out, naming


def load_pretrained(backbone: nn.Module, uri: str, *, strict: bool = True, sha256: str | None = None) -> LoadReport:
    """Load the weights at ``uri`` into ``backbone`` (a ResNet of models/resnet.py) and
    return the report. Raises InputError for a file that is unsafe, not a state dict,
    not the ``sha256`` given, fits no tensor, or (``strict``) leaves any tensor of the
    backbone unloaded; nothing is loaded then."""
    state, digest = read_state(uri, sha256=sha256)
    state, left_out, naming = translate(state)
    target = backbone.state_dict()
    adapted = []
    first = target.get("conv1.weight")
    theirs = state.get("conv1.weight")
    if first is not None and theirs is not None and theirs.shape[1] == 3 and first.shape[1] != 3:
        state = adapt_input_channels(state, first.shape[1])
        adapted.append(f"first conv averaged over its 3 RGB channels and repeated to {first.shape[1]}")
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
