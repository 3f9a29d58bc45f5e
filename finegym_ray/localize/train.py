"""Training the temporal detector with Ray Train, through the shared trainer factory
(``train/run.py: torch_trainer``) and checkpoint module (``train/checkpoint.py``).

Runs live at ``config.runs``/``run_name`` (local or s3://), as recognition runs do:
``epoch_NNNN/`` checkpoints, our ``config.yaml`` and Ray Train's run state. Running the
same config again continues after the newest complete checkpoint; a worker that dies is
replaced and restarts from it (``max_failures``).

Feature files are small (a video's sequence is a few hundred kB), so no Ray Data: the
driver lists them and reads the ground truth once, and each worker reads its own shard
of sequences into memory. Every worker holds the same number of sequences (a shard short
of one repeats its first), so every worker takes the same number of steps and DDP's
collectives stay in step.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, replace
from typing import Callable


from .. import storage
from ..config import from_dict, parse_recorded_yaml, to_yaml
from ..lease import writer_lease
from ..progress import duration
from ..train import checkpoint as checkpoints
from .config import LocalizeConfig
from .data import Dataset, GroundTruth, load_dataset

# Settings a resume may change: they change where and how fast, not what is trained.
MUTABLE = {"workers", "cpus_per_worker", "use_gpu", "max_failures", "runs", "features", "annotations",
           "keep_checkpoints", "score_threshold", "sigma", "max_detections", "val_every"}


def run_uri(config: LocalizeConfig) -> str:
    """The run's folder or URI; a local one absolute (Ray Train's workers may run in
    another working directory than the driver)."""
    runs = config.runs if storage.parse_uri(config.runs).is_s3 else os.path.abspath(config.runs)
    return storage.join(runs, config.run_name)


def ground_truth_of(config: LocalizeConfig) -> GroundTruth:
    """The ground truth of ``config.annotations`` at ``config.level`` (localize.formats)."""
    from .formats import read_ground_truth

    if not config.annotations:
        raise ValueError("localize needs annotations (--set annotations=PATH: a FineGym annotation folder or JSON, "
                         "or ActivityNet-format ground truth)")
    return read_ground_truth(config.annotations, level=config.level)


def prepare(config: LocalizeConfig, *, say: Callable[[str], None] = print) -> Dataset:
    """The run's sequences, split, with their ground truth; the detector name checked.
    Raises ValueError when they cannot train the task. No Ray needed."""
    from ..models.detector import DETECTORS

    if config.detector not in DETECTORS:
        raise ValueError(f"unknown detector {config.detector!r}; detectors: {', '.join(DETECTORS)}")
    data = load_dataset(config, ground_truth_of(config), say=say)
    if not data.train:
        raise ValueError(f"{config.features}: all {len(data.ids)} {config.level} sequences fell in val "
                         f"(val_fraction {config.val_fraction}): too few videos to train")
    if len(data.train) < config.workers:
        raise ValueError(f"{len(data.train)} training sequences cannot feed {config.workers} workers")
    say(f"{config.level} level, task {config.task}: {len(data.class_names)} classes, {len(data.train)} train and "
        f"{len(data.val)} val sequences of {data.feature_dim} features")
    return data


def run_localize_training(config: LocalizeConfig, *, break_lease: bool = False,
                          say: Callable[[str], None] = print) -> dict:
    """Train (or resume) the detector run of ``config`` on the Ray cluster this process is
    connected to. Returns ``run`` (its URI), ``checkpoint`` (the last one's URI) and
    ``history`` (metrics per epoch). Raises ValueError for data that cannot train or a run
    that cannot resume with these settings, RuntimeError when training fails past
    ``max_failures``. One job trains a run at a time (``lease.py``)."""
    import ray

    from ..capacity import Need, StallWatchdog, check_capacity

    # Before anything is read or written: a cluster too small would wait forever. A GPU
    # per worker when it trains on GPUs (use_gpu None: when the cluster has any).
    use_gpu = config.use_gpu if config.use_gpu is not None else ray.cluster_resources().get("GPU", 0.0) > 0
    gpus = 1.0 if use_gpu else 0.0
    check_capacity([Need("train workers", config.workers, {"CPU": float(config.cpus_per_worker), "GPU": gpus})],
                   what=f"localize train {config.run_name}")
    data = prepare(config, say=say)  # before the lease: bad data leaves no run folder
    uri = run_uri(config)
    with writer_lease(uri, what=f"localize train {config.run_name}", break_lease=break_lease, say=say), \
            StallWatchdog(f"localize train {config.run_name}", say=say,
                          probe=lambda: sum(len(f.names) for f in checkpoints.listing(uri))):
        resumed = checkpoints.find_latest(uri, say=say, verify_state=True)
        resume = None
        if resumed:
            _check_same(uri, config, resumed, data)
            if resumed.epoch + 1 >= config.epochs:
                say(f"{uri} has trained all {config.epochs} epochs")
                return _result(uri, resumed)
            # Loaded here, before Ray Train starts a worker: a state that would run code
            # is refused in one line, and the workers take what this loaded.
            resume = {"identity": resumed.identity, "state": ray.put(resumed.load_state())}
            say(f"resuming {uri} after {checkpoints.dir_name(resumed.epoch)}")
        else:
            storage.write_text(storage.join(uri, "config.yaml"), to_yaml(config))
        from ..train.run import torch_trainer

        loop_config = {"config": asdict(config), "class_names": data.class_names, "run": uri,
                       "train": data.train, "val": data.val, "ground_truth": data.ground_truth,
                       "feature_dim": data.feature_dim, "data_hash": data.settings_hash, "resume": resume}
        trainer = torch_trainer(_train_fn, loop_config, name=config.run_name, runs=config.runs,
                                workers=config.workers, cpus_per_worker=config.cpus_per_worker,
                                use_gpu=config.use_gpu, max_failures=config.max_failures)
        result = trainer.fit()
        if result.error:
            raise RuntimeError(f"training {uri} failed: {result.error}")
        last = checkpoints.find_latest(uri, say=say)
        if last is None or last.epoch + 1 < config.epochs:
            raise RuntimeError(f"training {uri} finished without the checkpoint of its last epoch")
        return _result(uri, last)


def _result(uri: str, checkpoint: checkpoints.Checkpoint) -> dict:
    return {"run": uri, "checkpoint": checkpoint.uri, "history": checkpoint.meta["history"],
            "class_names": checkpoint.meta["class_names"]}


def saved_settings(checkpoint: checkpoints.Checkpoint) -> dict:
    """The settings in a checkpoint's config.yaml, read as data from others is
    (``config.parse_recorded_yaml``); ValueError naming it when it is not a YAML mapping."""
    where = f"{checkpoint.uri}/config.yaml"
    saved = parse_recorded_yaml(checkpoint.config_yaml, where)
    if not isinstance(saved, dict):
        raise ValueError(f"{where}: not a mapping of settings")
    return saved


def _check_same(uri: str, config: LocalizeConfig, checkpoint: checkpoints.Checkpoint, data: Dataset) -> None:
    """Refuse to resume with settings that change the model or its data."""
    saved = saved_settings(checkpoint)
    changed = sorted(k for k, v in asdict(config).items() if k not in MUTABLE and saved.get(k) != v)
    if changed:
        was = ", ".join(f"{k}={saved.get(k)!r}" for k in changed)
        raise ValueError(f"{uri} was trained with other settings ({was}): use another name, "
                         f"or the same settings to resume")
    theirs = checkpoint.meta.get("data_hash")
    if theirs != data.settings_hash or checkpoint.meta.get("class_names") != data.class_names:
        raise ValueError(f"{checkpoint.uri} was trained on features with settings hash {theirs} and classes "
                         f"{checkpoint.meta.get('class_names')}, but {config.features} holds hash "
                         f"{data.settings_hash} and classes {data.class_names}: use another name")


def checkpoint_config(checkpoint: checkpoints.Checkpoint) -> LocalizeConfig:
    """The LocalizeConfig a checkpoint was written with."""
    return from_dict(LocalizeConfig, saved_settings(checkpoint), f"{checkpoint.uri}/config.yaml")


def build_detector(config: LocalizeConfig, *, in_channels: int, num_classes: int):
    """The detector ``config`` names (models.DETECTORS) for these input channels and classes."""
    from ..models.detector import DETECTORS

    try:
        return DETECTORS[config.detector](in_channels=in_channels, num_classes=num_classes,
                                          **config.detector_kwargs)
    except TypeError as e:  # an unknown keyword: a setting, not a bug
        raise ValueError(f"detector {config.detector!r}: {e} (detector_kwargs {config.detector_kwargs})") from None


def format_history(history: list[dict]) -> str:
    """The losses of each epoch as a table."""
    cols = [("epoch", "epoch", "{:d}"), ("train_loss", "loss", "{:.4f}"), ("train_cls", "cls", "{:.4f}"),
            ("train_reg", "reg", "{:.4f}"), ("val_loss", "val loss", "{:.4f}"), ("epoch_s", "s", "{:.1f}")]
    lines = ["  ".join(f"{title:>9}" for _, title, _ in cols)]
    for m in history:
        lines.append("  ".join(f"{(fmt.format(m[k]) if m.get(k) is not None else '-'):>9}" for k, _, fmt in cols))
    return "\n".join(lines)


# -- what each Ray Train worker runs -------------------------------------------------------


def _train_fn(args: dict) -> None:
    """Ray Train entry point. ``args``: ``config`` (LocalizeConfig as a dict),
    ``class_names``, ``run`` (URI), ``train`` / ``val`` (sequence URIs), ``ground_truth``
    (sequence id -> [(label, start s, end s)]), ``feature_dim``, ``data_hash``, ``resume``
    (the checkpoint the driver loaded to resume from, see ``_resume_point``; None: none)."""
    import numpy as np
    import ray.train
    import ray.train.torch
    import torch

    from ..train import steps
    from .data import load_examples

    config = from_dict(LocalizeConfig, args["config"])
    class_names = args["class_names"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    device = ray.train.torch.get_device()
    run = args["run"]

    # This worker's shard, every shard as long as the longest (see the module docstring).
    uris = args["train"]
    shard = uris[rank::world]
    per_worker = -(-len(uris) // world)
    shard = (shard * per_worker)[:per_worker] if shard else uris[:per_worker]
    gt = {k: [tuple(s) for s in v] for k, v in args["ground_truth"].items()}
    train = load_examples(shard, gt, class_names, config.task)
    val = load_examples(args["val"], gt, class_names, config.task) if rank == 0 and config.val_every else []

    resumed = _resume_point(run, args["resume"], say=_say if rank == 0 else None)
    # Before the model is built, so that the seed sets its initial weights: the same on
    # every worker and in every fresh run with this seed.
    torch.manual_seed(config.seed)
    # On the device before the optimizer exists: a resumed optimizer state is loaded onto
    # its parameters' device, which must be the one they train on.
    model = build_detector(config, in_channels=args["feature_dim"], num_classes=len(class_names)).to(device)
    optimizer = steps.make_optimizer(model.parameters(), name=config.optimizer, lr=config.lr,
                                     momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = steps.make_scheduler(optimizer, epochs=config.epochs, warmup_epochs=config.warmup_epochs)
    start_epoch, history = checkpoints.restore(resumed, model=model, optimizer=optimizer, scheduler=scheduler)
    if resumed is not None and rank == 0:
        _say(f"resuming after {resumed[0].uri} ({start_epoch} of {config.epochs} epochs done)")
    model = ray.train.torch.prepare_model(model)
    bare = model.module if hasattr(model, "module") else model

    def to_device(batch):
        return _to_device(batch, device)

    epoch_seconds = []  # of this session's epochs, for the run's ETA
    for epoch in range(start_epoch, config.epochs):
        t0 = time.time()
        model.train()
        # The order and crops of an epoch follow from the seed, the epoch and the rank, so
        # a resumed run repeats them.
        rng = np.random.default_rng([config.seed, epoch, rank])
        means = train_epoch(model, bare.loss, optimizer, train, batch_size=config.batch_size,
                            max_steps=config.max_steps, grad_clip=config.grad_clip, rng=rng, device=device)
        scheduler.step()
        mean = torch.tensor(list(means.values()), device=device)
        if world > 1:
            torch.distributed.all_reduce(mean)
            mean /= world
        metrics = {"epoch": epoch, "lr": config.lr * steps.lr_factor(epoch, epochs=config.epochs,
                                                                     warmup_epochs=config.warmup_epochs),
                   **{f"train_{k}": round(float(v), 5) for k, v in zip(means, mean.tolist())}}
        if val and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
            metrics["val_loss"] = round(_val_loss(bare, val, config.batch_size, to_device), 5)
        metrics["epoch_s"] = round(time.time() - t0, 2)
        history.append(metrics)
        if rank == 0:  # one copy of the (DDP-identical) state; the others report metrics only
            epoch_seconds.append(metrics["epoch_s"])
            left = config.epochs - epoch - 1
            eta = f"; run ETA {duration(sum(epoch_seconds) / len(epoch_seconds) * left)}" if left else ""
            _say(f"epoch {epoch + 1}/{config.epochs}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch" and isinstance(v, (int, float))) + eta)
            checkpoints.write(run, epoch, config_yaml=to_yaml(config),
                              state={"model": bare.state_dict(), "optimizer": optimizer.state_dict(),
                                     "scheduler": scheduler.state_dict(), "epoch": epoch,
                                     "rng": checkpoints.rng_state()},
                              meta={"class_names": class_names, "data_hash": args.get("data_hash"),
                                    "feature_dim": args["feature_dim"], "history": history})
            checkpoints.prune(run, keep_last=config.keep_checkpoints, keep_best=False)
        ray.train.report(metrics)


def _resume_point(run: str, given: dict | None, *, say: Callable[[str], None] | None) -> tuple | None:
    """(checkpoint, state) a worker resumes from: the driver's (``given``: the identity of
    the checkpoint it loaded and an ObjectRef of that state) while that is the run's
    newest checkpoint; else, after a worker group restarted past a checkpoint this job
    wrote, the newest one, loaded here (``checkpoints.load_latest``). None: a fresh run."""
    import ray

    if given is not None:
        latest = checkpoints.find_latest(run)
        if latest is not None and latest.identity == given["identity"]:
            return latest, ray.get(given["state"])
    return checkpoints.load_latest(run, say=say)


def _to_device(batch, device):
    feats, mask, targets = batch
    return feats.to(device), mask.to(device), [(s.to(device), lab.to(device)) for s, lab in targets]


def train_epoch(model, loss_fn, optimizer, examples: list, *, batch_size: int, max_steps: int, grad_clip: float,
                rng, device) -> dict[str, float]:
    """One pass over ``examples`` (data.Example) in an order drawn from ``rng``, each
    cropped to ``max_steps`` (0: whole); ``loss_fn(output, targets)`` is the detector's
    ``loss`` (the bare module's under DDP). Returns the mean ``loss``, ``cls``, ``reg``
    over the batches. Torch only: the Ray Train loop and benchmarks/detector.py call it."""
    import torch

    from .data import collate, crop

    order = rng.permutation(len(examples))
    sums = {"loss": 0.0, "cls": 0.0, "reg": 0.0}
    batches = 0
    for i in range(0, len(order), batch_size):
        items = [crop(examples[j], max_steps, rng) for j in order[i:i + batch_size]]
        feats, mask, targets = _to_device(collate(items), device)
        losses = loss_fn(model(feats, mask), targets)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        for k in sums:
            sums[k] += float(losses[k].detach())
        batches += 1
    return {k: v / max(batches, 1) for k, v in sums.items()}


def _val_loss(model, val: list, batch_size: int, to_device) -> float:
    """Mean detector loss over the validation sequences (rank 0, the bare module, so that
    DDP starts no collective)."""
    import torch

    from .data import collate

    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(val), batch_size):
            feats, mask, targets = to_device(collate(val[i:i + batch_size]))
            total += float(model.loss(model(feats, mask), targets)["loss"])
            n += 1
    model.train()
    return total / max(n, 1)


def _say(message: str) -> None:
    # Not print(): Ray Train patches it to log *and* echo, which shows every line twice.
    sys.stdout.write(f"[localize] {message}\n")
    sys.stdout.flush()


def with_paths(config: LocalizeConfig, **paths: str | None) -> LocalizeConfig:
    """``config`` with the given fields replaced where the value is not None."""
    return replace(config, **{k: v for k, v in paths.items() if v is not None})
