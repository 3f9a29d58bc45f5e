"""A run's settings and epochs in MLflow and Weights & Biases, beside the TensorBoard
files of ``curves.py``. Both are off unless a run's config names them (``mlflow``: a
tracking URI; ``wandb``: a W&B project); each needs its optional extra.

One tracker run per training run, named as the run. Its params are the run's whole
config (as config.yaml records it); each epoch logs the metrics the engine reports,
step = epochs done (1-based, TensorBoard's step). A resumed run continues its tracker
runs: their ids are in every checkpoint's meta.json (``trackers``), so a resume finds
exactly the tracker runs of the training it continues, while a run trained afresh
under a used name (its folder removed) gets new ones. A tracker switched on when a run
resumes gets a new tracker run holding the earlier epochs too. A Tune trial's tracker
run is grouped under its sweep's name (MLflow experiment, W&B group).

Where the work happens, and why not Ray's callbacks alone:

- Ray's ``MLflowLoggerCallback`` and ``WandbLoggerCallback`` are Tune logger callbacks.
  Train V2 refuses Tune callbacks in a trainer's RunConfig, so plain training cannot
  use them; on a sweep's Tuner they would log only the swept values (not the resolved
  config), step by Tune's iteration (which starts again at 1 when a trial resumes) and
  open new tracker runs when a sweep is restored (their state is not saved with it).
- ``setup_mlflow`` takes no run id (it starts a new MLflow run) and logs the config
  with MLflow's fluent API, which refuses a param whose value changed: a resumed run
  (with, say, other ``workers``) could not continue its own. So the driver (``tracking``) finds or
  creates the MLflow run and logs its params through ``MlflowClient``, and rank 0 logs
  each epoch's metrics to that run id.
- ``setup_wandb`` fits: rank 0 calls it with the run's id, name, group and
  ``resume="allow"``. Its defaults for these, and its rank-0 check, read Ray Train's V1
  session, which a Train V2 worker does not have; so they are passed, and only rank 0
  calls it.

Credentials stay in the environment: W&B's key, MLflow's token or password are read by
the trackers on the nodes from their own environment (a Ray that the command starts
inherits the caller's), never written into a config, a param or Ray's runtime env.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import InputError

Say = Callable[[str], None]

# Config field (also the name of the extra that installs its package) -> the package.
OPTIONS = {"mlflow": "mlflow", "wandb": "wandb"}
# The MLflow experiment of a run outside a sweep, unless MLFLOW_EXPERIMENT_NAME names one.
EXPERIMENT = "finegym-ray"
# The MLflow tag holding the run's folder (local or s3://), to find a run's MLflow run.
RUN_TAG = "finegym_ray.run"
# The trackers' own settings of the caller's environment that the workers need, and that
# may not be in theirs (a joined cluster's nodes, a Tune trial's driver): carried with the
# run. Never a credential.
FORWARDED_ENV = ("WANDB_MODE", "WANDB_DIR", "WANDB_ENTITY", "WANDB_BASE_URL", "WANDB_RUN_GROUP", "WANDB_SILENT",
                 "WANDB_CONSOLE", "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_TRACKING_INSECURE_TLS")
# W&B refuses these in a project name.
WANDB_PROJECT_REFUSED = set("/\\#?%:")


def check_options(problems: list[str], mlflow: str, wandb: str) -> None:
    """Add to ``problems`` what is wrong with the ``mlflow`` and ``wandb`` settings."""
    if not isinstance(mlflow, str) or any(c.isspace() for c in mlflow):
        problems.append(f"mlflow must be an MLflow tracking URI (file:./mlruns, http://host:5000) or empty (off), "
                        f"got {mlflow!r}")
    elif mlflow and urlsplit(mlflow).password:
        # The run records its config (config.yaml, every checkpoint's, MLflow's params).
        problems.append("mlflow: no password in the URI, which the run records: set MLFLOW_TRACKING_USERNAME and "
                        "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment")
    if not isinstance(wandb, str) or len(wandb) > 128 or set(wandb) & WANDB_PROJECT_REFUSED \
            or any(c.isspace() for c in wandb):
        problems.append(f"wandb must be a W&B project name (at most 128 characters, none of / \\ # ? % : or spaces; "
                        f"the entity in WANDB_ENTITY) or empty (off), got {wandb!r}")


def require(config: Any) -> None:
    """InputError naming the extra to install when ``config`` turns on a tracker whose
    package is missing, or saying why a local MLflow store refuses to open (MLflow 3
    opens a file store only with MLFLOW_ALLOW_FILE_STORE=true). Commands call it before
    Ray starts; a server is not contacted here (its client retries for minutes)."""
    for option, package in OPTIONS.items():
        if getattr(config, option) and not _installed(package):
            raise InputError(f"{option}={getattr(config, option)} needs the {package} package: "
                             f"pip install 'finegym-ray[{option}]'")
    uri = tracking_uri(config.mlflow) if config.mlflow else ""
    if uri.startswith("file:"):
        from mlflow.tracking import MlflowClient

        with _mlflow_errors(uri):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


@contextlib.contextmanager
def _mlflow_errors(uri: str) -> Iterator[None]:
    """MLflow's refusals (a store that will not open, a run it will not make) as
    InputError naming the setting."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as e:
        raise InputError(f"mlflow={uri}: {e.message}") from e


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a module entry of None or without a spec: not importable
        return False


def _forwarded_env() -> dict[str, str]:
    env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    if "WANDB_DIR" in env:  # the workers' working directory is not the caller's
        env["WANDB_DIR"] = os.path.abspath(env["WANDB_DIR"])
    return env


@dataclass(frozen=True)
class Scope:
    """What a run's tracker runs take from the process the user started, made there:
    ``group`` (a sweep's name: the MLflow experiment and the W&B group; "" for a run of
    its own) and ``env`` (``FORWARDED_ENV`` as set there)."""

    group: str = ""
    env: dict[str, str] = field(default_factory=_forwarded_env)


@dataclass(frozen=True)
class Tracking:
    """A run's tracker runs, set up on the driver and sent to the workers. Empty
    ``mlflow_uri`` / ``wandb_project``: that tracker is off."""

    run: str  # the run's URI
    name: str  # the tracker runs' name: the run's
    group: str
    params: dict  # the run's resolved config
    env: dict[str, str]
    mlflow_uri: str = ""
    mlflow_run_id: str = ""
    wandb_project: str = ""
    wandb_id: str = ""

    @property
    def record(self) -> dict:
        """What each checkpoint's meta.json holds of them, under ``trackers``."""
        ids = {}
        if self.mlflow_uri:
            ids["mlflow"] = {"uri": self.mlflow_uri, "run_id": self.mlflow_run_id}
        if self.wandb_project:
            ids["wandb"] = {"project": self.wandb_project, "id": self.wandb_id}
        return {"trackers": ids}


def checkpoint_meta(tracking: Tracking | None) -> dict:
    """The entries ``tracking`` adds to a checkpoint's meta.json ({} when no tracker is on)."""
    return tracking.record if tracking is not None else {}


def tracking_uri(value: str) -> str:
    """An MLflow tracking URI as the workers must see it: a local store (``file:PATH``
    or a bare path) absolute, since they may run in another working directory."""
    parts = urlsplit(value)
    if parts.scheme in ("", "file") and not parts.netloc:
        return Path(os.path.abspath(parts.path if parts.scheme else value)).as_uri()
    return value


@contextlib.contextmanager
def tracking(config: Any, run: str, resumed: Any, *, scope: Scope | None = None,
             say: Say = print) -> Iterator[Tracking | None]:
    """The driver's part around a run's fit: its tracker runs found (``resumed``: the
    checkpoint it resumes from, whose meta.json names them) or made, yielded for the
    workers (None when no tracker is on), and the MLflow run marked FINISHED, FAILED or
    KILLED (Ctrl-C) by how the fit ends. Raises InputError for a missing package or a
    tracking store that refuses the run."""
    if not any(getattr(config, option) for option in OPTIONS):
        yield None
        return
    scope = scope or Scope()
    # MLflow's client reads its settings here too (a Tune trial's process lacks the user's).
    os.environ.update({k: v for k, v in scope.env.items() if k.startswith("MLFLOW_")})
    require(config)
    recorded = (resumed.meta.get("trackers") or {}) if resumed is not None else {}
    made = Tracking(run=run, name=config.run_name, group=scope.group, params=asdict(config), env=scope.env)
    history = resumed.meta.get("history", []) if resumed is not None else []
    if config.wandb:
        same = recorded.get("wandb") or {}
        made = replace(made, wandb_project=config.wandb,
                       wandb_id=same["id"] if same.get("project") == config.wandb else _wandb_id(run))
        say(f"W&B: run {made.name} ({made.wandb_id}) in project {config.wandb}"
            + (f", group {scope.group}" if scope.group else ""))
    client = None
    if config.mlflow:
        uri = tracking_uri(config.mlflow)
        client, run_id = _mlflow_run(made, uri, (recorded.get("mlflow") or {}), history, say=say)
        made = replace(made, mlflow_uri=uri, mlflow_run_id=run_id)
    status = "FAILED"
    try:
        yield made
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if client is not None:
            try:
                client.set_terminated(made.mlflow_run_id, status=status)
            except Exception as e:  # the run's outcome stands: a store that is down costs its status only
                say(f"MLflow: run {made.mlflow_run_id} not marked {status}: {' '.join(str(e).split())[:300]}")


def _wandb_id(run: str) -> str:
    """A W&B run id for a run trained afresh: from its URI (runs of one folder share the
    prefix) and the time, so that a run trained again under a used name, its folder
    removed, does not continue the W&B run of the one before."""
    return f"{hashlib.sha256(run.encode()).hexdigest()[:8]}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"


def _mlflow_run(tracking: Tracking, uri: str, recorded: dict, history: list[dict], *, say: Say) -> tuple[Any, str]:
    """(client, run id) of the run's MLflow run at ``uri``: the recorded one where it is
    still there, else a new one with the run's params (and ``history``, the epochs
    trained before MLflow was on)."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    experiment = tracking.group or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    say(f"MLflow: run {tracking.name} in experiment {experiment} at {uri}")
    with _mlflow_errors(uri):
        client = MlflowClient(tracking_uri=uri)
        if recorded.get("uri") == uri and _mlflow_run_exists(client, recorded["run_id"]):
            client.update_run(recorded["run_id"], status="RUNNING")
            return client, recorded["run_id"]
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run_id = client.create_run(experiment_id, run_name=tracking.name, tags={RUN_TAG: tracking.run}).info.run_id
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in tracking.params.items()])
        if history:
            client.log_batch(run_id, metrics=[m for entry in history for m in _mlflow_metrics(entry)])
    return client, run_id


def _mlflow_run_exists(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


def _mlflow_metrics(entry: dict) -> list:
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    return [Metric(key, float(value), stamp, step) for key, value, step in _scalars(entry)]


def _scalars(entry: dict) -> list[tuple[str, float, int]]:
    """(key, value, step) of an epoch's numeric metrics; the step is epochs done, so
    ``epoch`` itself is left out."""
    from .curves import epochs_done

    step = epochs_done(entry)
    return [(k, float(v), step) for k, v in entry.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)]


# -- what rank 0 runs ------------------------------------------------------------------------


class Logger:
    """Rank 0's side: each epoch's metrics to the run's tracker runs. An MLflow log that
    fails is said and training goes on (a server that is down must not cost the run);
    W&B keeps what it could not send and retries on its own."""

    def __init__(self, tracking: Tracking, *, history: list[dict], resumed_meta: dict, say: Say):
        self.tracking, self.say = tracking, say
        os.environ.update(tracking.env)
        self.mlflow = None
        if tracking.mlflow_uri:
            from mlflow.tracking import MlflowClient

            self.mlflow = MlflowClient(tracking_uri=tracking.mlflow_uri)
        self.wandb = None
        if tracking.wandb_project:
            self.wandb = self._wandb_run()
            # A W&B run that the checkpoint resumed from does not name is new: it gets the
            # epochs trained before it, as a new MLflow run gets them from the driver.
            known = ((resumed_meta.get("trackers") or {}).get("wandb") or {}).get("id")
            if known != tracking.wandb_id:
                for entry in history:
                    self._wandb_log(entry)

    def _wandb_run(self):
        from ray.air.integrations.wandb import setup_wandb

        from .. import storage

        t = self.tracking
        # W&B's files (its offline runs, logs) beside the run's own, unless WANDB_DIR says.
        local = not storage.parse_uri(t.run).is_s3
        where = {} if "WANDB_DIR" in t.env or not local else {"dir": t.run}
        return setup_wandb(config=t.params, project=t.wandb_project, trial_id=t.wandb_id, trial_name=t.name,
                           group=t.group or None, resume="allow", reinit="finish_previous", **where)

    def _wandb_log(self, entry: dict) -> None:
        scalars = _scalars(entry)
        if scalars:
            self.wandb.log({k: v for k, v, _ in scalars}, step=scalars[0][2])

    def log(self, metrics: dict) -> None:
        """Log one epoch's ``metrics`` (the dict the engine reports)."""
        if self.mlflow is not None:
            try:
                self.mlflow.log_batch(self.tracking.mlflow_run_id, metrics=_mlflow_metrics(metrics))
            except Exception as e:  # whatever the store's failure: said, and training goes on
                self.say(f"MLflow: epoch {metrics['epoch'] + 1} not logged: {' '.join(str(e).split())[:300]}")
        if self.wandb is not None:
            self._wandb_log(metrics)

    def close(self) -> None:
        """Finish the W&B run (uploads what is left); MLflow's ends on the driver."""
        if self.wandb is not None:
            self.wandb.finish()


def logger(tracking: Tracking | None, *, history: list[dict], resumed_meta: dict | None, say: Say) -> Logger | None:
    """Rank 0's :class:`Logger` of ``tracking`` (None when no tracker is on). ``history``:
    the epochs trained before this session; ``resumed_meta``: the meta.json of the
    checkpoint it resumes from (None: a fresh run)."""
    if tracking is None:
        return None
    return Logger(tracking, history=history, resumed_meta=resumed_meta or {}, say=say)
