"""The temporal detector: contract, masking, target assignment, soft-NMS, and that it can learn."""

from __future__ import annotations

import math

import pytest
import torch

from finegym_ray.models import DETECTORS, soft_nms
from finegym_ray.models.detector import segment_iou


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tensors this small gain nothing from threads, and on a busy machine OpenMP's
    # synchronisation made each training step 50 times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = {"embed_dim": 16, "head_dim": 16, "num_levels": 4}
NO_SEGMENTS = (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))


def _batch(lengths: list[int], channels: int, *, garbage: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features (B, C, T_max) and a right-padding mask; padding holds large values and NaN."""
    t = max(lengths)
    feats = torch.randn(len(lengths), channels, t)
    mask = torch.arange(t)[None] < torch.tensor(lengths)[:, None]  # (B, T)
    if garbage:
        feats = torch.where(mask[:, None], feats, 1e3 * torch.randn_like(feats))
        feats[:, 0][~mask] = math.nan
    return feats, mask


@pytest.mark.parametrize("name", sorted(DETECTORS))
@pytest.mark.parametrize("num_classes", [1, 3], ids=["agnostic", "classes"])
@pytest.mark.parametrize("downsample", ["max", "conv"])
def test_every_detector_gives_outputs_and_trains_every_parameter(name, num_classes, downsample):
    torch.manual_seed(0)
    model = DETECTORS[name](in_channels=5, num_classes=num_classes, downsample=downsample, **TINY)
    feats, mask = _batch([37, 20, 1], channels=5)
    out = model(feats, mask)
    assert out.strides == [1, 2, 4, 8]
    for lv, stride in enumerate(out.strides):
        t_l = 40 // stride  # 37 steps padded to a multiple of the total stride 8
        assert out.logits[lv].shape == (3, t_l, num_classes)
        assert out.distances[lv].shape == (3, t_l, 2) and out.masks[lv].shape == (3, t_l)
        assert torch.equal(out.centres[lv], (torch.arange(t_l) + 0.5) * stride)
        valid = out.masks[lv]
        assert torch.isfinite(out.logits[lv][valid]).all() and (out.distances[lv][valid] >= 0).all()
    assert out.masks[0].sum(1).tolist() == [37, 20, 1] and out.masks[3].sum(1).tolist() == [5, 3, 1]
    targets = [(torch.tensor([[2.0, 9.0], [12.0, 35.0]]), torch.tensor([0, num_classes - 1])),
               (torch.tensor([[0.0, 4.0]]), torch.tensor([0])), NO_SEGMENTS]
    losses = model.loss(out, targets)
    assert set(losses) == {"loss", "cls", "reg"}
    assert all(v.dim() == 0 and torch.isfinite(v) and v > 0 for v in losses.values()), losses
    losses["loss"].backward()
    # DDP needs this: it waits for a gradient of every parameter.
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


@pytest.mark.parametrize("downsample", ["max", "conv"])
def test_a_sequence_alone_and_padded_in_a_batch_gives_the_same_outputs(downsample):
    torch.manual_seed(0)
    model = DETECTORS["pyramid"](in_channels=4, num_classes=2, downsample=downsample, **TINY).eval()
    lengths = [45, 21, 8, 1]
    feats, mask = _batch(lengths, channels=4)
    with torch.no_grad():
        batched = model(feats, mask)
        batched_dets = model.detect(batched, max_detections=20)
        for i, n in enumerate(lengths):
            alone = model(feats[i:i + 1, :, :n], mask[i:i + 1, :n])
            for lv in range(len(alone.strides)):
                valid = alone.masks[lv][0]
                t_l = valid.shape[0]
                assert torch.equal(batched.masks[lv][i, :t_l], valid) and not batched.masks[lv][i, t_l:].any()
                torch.testing.assert_close(batched.logits[lv][i, :t_l][valid], alone.logits[lv][0][valid])
                torch.testing.assert_close(batched.distances[lv][i, :t_l][valid], alone.distances[lv][0][valid])
            segs, scores, labels = model.detect(alone, max_detections=20)[0]
            b_segs, b_scores, b_labels = batched_dets[i]
            assert len(segs) > 0 and (segs[:, 0] >= 0).all() and (segs[:, 1] <= n).all()
            torch.testing.assert_close(b_segs, segs)
            torch.testing.assert_close(b_scores, scores)
            assert torch.equal(b_labels, labels)


def test_padded_steps_never_count_in_the_loss():
    torch.manual_seed(0)
    model = DETECTORS["pyramid"](in_channels=4, num_classes=2, **TINY)
    feats, mask = _batch([30], channels=4, garbage=False)
    # The segment runs past the end: points beyond step 30 would be positives if padding counted.
    target = [(torch.tensor([[20.0, 60.0]]), torch.tensor([1]))]
    alone = model.loss(model(feats, mask), target)
    padded_feats = torch.cat([feats, 1e3 * torch.randn(1, 4, 50)], 2)  # (1, 4, 80)
    padded_mask = torch.cat([mask, torch.zeros(1, 50, dtype=torch.bool)], 1)
    padded = model.loss(model(padded_feats, padded_mask), target)
    for key in ("loss", "cls", "reg"):
        torch.testing.assert_close(padded[key], alone[key])


def test_samples_without_segments():
    torch.manual_seed(0)
    model = DETECTORS["pyramid"](in_channels=4, num_classes=2, **TINY)
    feats, mask = _batch([30, 12], channels=4)
    out = model(feats, mask)
    empty = model.loss(out, [NO_SEGMENTS, NO_SEGMENTS])
    # No positives: the normaliser's floor of 1 keeps the loss the plain sum of negatives.
    assert empty["reg"] == 0 and torch.isfinite(empty["cls"]) and empty["cls"] > 0
    empty["loss"].backward()
    assert model.cls_head.out.bias.grad.abs().sum() > 0
    mixed = model.loss(out, [(torch.tensor([[3.0, 9.0]]), torch.tensor([1])), NO_SEGMENTS])
    assert torch.isfinite(mixed["loss"]) and mixed["reg"] > 0


def test_targets_go_to_the_level_of_their_range_and_the_shortest_segment_wins():
    model = DETECTORS["pyramid"](in_channels=4, num_classes=2, **TINY)
    out = model(*_batch([16], channels=4, garbage=False))
    # A = [0, 6) label 0 and the shorter B = [2, 5) label 1; radius 1.5 strides.
    cls_t, reg_t = model.assign(out, [(torch.tensor([[0.0, 6.0], [2.0, 5.0]]), torch.tensor([0, 1]))])
    sizes = [len(c) for c in out.centres]  # points per level: 16, 8, 4, 2
    level0, level1 = cls_t[0, :sizes[0]], cls_t[0, sizes[0]:sizes[0] + sizes[1]]
    # Level 0 (stride 1): A claims centres 2.5 and 3.5, B claims 2.5, 3.5 and 4.5: B wins all.
    assert level0[:, 1].nonzero().flatten().tolist() == [2, 3, 4] and not level0[:, 0].any()
    torch.testing.assert_close(reg_t[0, 2:5], torch.tensor([[0.5, 2.5], [1.5, 1.5], [2.5, 0.5]]))
    # Level 1 (stride 2, range [4, 8)): centres 1 and 5 reach 5 steps into A; B reaches at most 2.
    assert level1[:, 0].nonzero().flatten().tolist() == [0, 2] and not level1[:, 1].any()
    torch.testing.assert_close(reg_t[0, sizes[0] + 0], torch.tensor([1.0, 5.0]))
    torch.testing.assert_close(reg_t[0, sizes[0] + 2], torch.tensor([5.0, 1.0]))
    assert cls_t[0, sizes[0] + sizes[1]:].sum() == 0  # nothing on the coarser levels


def test_soft_nms_decays_overlaps_of_the_same_class_only():
    segments = torch.tensor([[0.0, 10.0], [5.0, 15.0], [5.0, 15.0], [40.0, 50.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.3])
    labels = torch.tensor([0, 0, 1, 0])
    out_segs, out_scores, out_labels = soft_nms(segments, scores, labels, sigma=0.5, min_score=0.001,
                                                max_detections=10)
    iou = 5 / 15  # [0, 10) and [5, 15)
    decayed = 0.8 * math.exp(-iou ** 2 / 0.5)  # 0.6406, now below the class-1 box
    # The class-1 box overlaps the top box as much but keeps its score; so does the far box.
    torch.testing.assert_close(out_scores, torch.tensor([0.9, 0.7, decayed, 0.3]))
    assert out_labels.tolist() == [0, 1, 0, 0]
    torch.testing.assert_close(out_segs, segments[[0, 2, 1, 3]])


def test_soft_nms_reorders_drops_and_caps():
    segments = torch.tensor([[0.0, 10.0], [1.0, 10.0], [20.0, 30.0]])
    scores = torch.tensor([0.9, 0.85, 0.5])
    labels = torch.zeros(3, dtype=torch.long)
    # IoU 0.9: the second box decays to 0.85 * exp(-0.81 / 0.5) = 0.168, below the far box.
    segs, sc, _ = soft_nms(segments, scores, labels, sigma=0.5, min_score=0.001, max_detections=10)
    torch.testing.assert_close(segs, segments[[0, 2, 1]])
    torch.testing.assert_close(sc, torch.tensor([0.9, 0.5, 0.85 * math.exp(-0.81 / 0.5)]))
    segs, sc, _ = soft_nms(segments, scores, labels, sigma=0.5, min_score=0.2, max_detections=10)
    assert sc.tolist() == pytest.approx([0.9, 0.5])  # the decayed box fell under min_score
    segs, sc, _ = soft_nms(segments, scores, labels, sigma=0.5, min_score=0.001, max_detections=1)
    assert len(segs) == 1 and sc.tolist() == pytest.approx([0.9])
    segs, sc, lab = soft_nms(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long), sigma=0.5,
                             min_score=0.001, max_detections=5)
    assert segs.shape == (0, 2) and sc.shape == (0,) and lab.shape == (0,)


def _synthetic(generator: torch.Generator, n: int, length: int) -> tuple[torch.Tensor, list]:
    """Sequences (n, 4, length) with non-overlapping segments of 2 classes, 3 to 24 steps long.

    Channel 0 is 1 inside any segment, channel 1 + label inside that label's segments, the
    last channel is noise; segments touch nothing, so boundaries are visible locally.
    """
    feats = 0.1 * torch.randn(n, 4, length, generator=generator)
    targets = []
    for i in range(n):
        segs, labels, t = [], [], int(torch.randint(1, 6, (1,), generator=generator))
        while True:
            size = int(torch.randint(3, 25, (1,), generator=generator))
            if t + size >= length:
                break
            label = int(torch.randint(0, 2, (1,), generator=generator))
            feats[i, 0, t:t + size] += 1
            feats[i, 1 + label, t:t + size] += 1
            segs.append([t, t + size])
            labels.append(label)
            t += size + int(torch.randint(3, 12, (1,), generator=generator))
        targets.append((torch.tensor(segs, dtype=torch.float32), torch.tensor(labels)))
    return feats, targets


def test_detector_overfits_a_few_synthetic_sequences():
    torch.manual_seed(0)
    feats, targets = _synthetic(torch.Generator().manual_seed(0), n=4, length=96)
    mask = torch.ones(4, 96, dtype=torch.bool)
    model = DETECTORS["pyramid"](in_channels=4, num_classes=2, embed_dim=32, head_dim=32, num_levels=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):  # about 1.5 s of one core; it converges in about 50
        losses = model.loss(model(feats, mask), targets)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        detections = model.detect(model(feats, mask), max_detections=50)
    ious = []
    for (gt, gt_labels), (segs, _scores, labels) in zip(targets, detections):
        # The top len(gt) detections should be the ground truth, each with its class.
        top, top_labels = segs[:len(gt)], labels[:len(gt)]
        iou = segment_iou(gt, top) * (gt_labels[:, None] == top_labels[None])  # (N, N)
        ious.append(iou.max(1).values)
    ious = torch.cat(ious)
    assert len(ious) >= 12
    assert ious.mean() > 0.9 and ious.min() > 0.7, ious


def test_bad_inputs_are_clear_errors():
    model = DETECTORS["pyramid"](in_channels=4, num_classes=2, **TINY)
    feats, mask = _batch([10], channels=4, garbage=False)
    with pytest.raises(ValueError, match="right padding"):
        model(feats, torch.tensor([[False] + [True] * 9]))
    with pytest.raises(ValueError, match=r"feats \(B, C, T\)"):
        model(feats[0], mask)
    with pytest.raises(ValueError, match="labels outside"):
        model.loss(model(feats, mask), [(torch.tensor([[1.0, 3.0]]), torch.tensor([2]))])
    with pytest.raises(ValueError, match="downsample"):
        DETECTORS["pyramid"](in_channels=4, num_classes=2, downsample="avg")
    with pytest.raises(ValueError, match="sigma"):
        soft_nms(torch.zeros(1, 2), torch.ones(1), torch.zeros(1, dtype=torch.long), sigma=0, min_score=0,
                 max_detections=1)
