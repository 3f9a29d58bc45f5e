"""``finegym-ray submit STAGE``: a stage's job entry point (jobs/STAGE.py) submitted to a
cluster through Ray's Jobs API."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .options import add_overrides, add_storage_options


def add_parser(sub) -> None:
    p = sub.add_parser(
        "submit", help="submit a stage (preprocess, ...) as a Ray job to a cluster",
        usage="finegym-ray submit STAGE [--address URL] [--config YAML] [--set K=V ...] [--wait] -- [STAGE OPTIONS]",
        description="Submit 'python jobs/STAGE.py ARGS' through Ray's Jobs API, with this checkout as the "
                    "working directory and the S3 endpoint/region (never credentials) in the job's environment. "
                    "Prints the job id; with --wait follows the logs and exits with the job's status.",
        epilog="example: finegym-ray submit preprocess --address http://127.0.0.1:8265 --wait -- "
               "--annotations s3://b/ann --videos s3://b/videos --out s3://b/clips")
    p.add_argument("stage", help="stage to run: a job entry point under jobs/ (preprocess, demo, ...)")
    p.add_argument("--address",
                   help="Ray dashboard / Jobs API address; it wins over the environment (default "
                        "$RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS, else http://127.0.0.1:8265); it says which")
    p.add_argument("--config", metavar="YAML", help="stage config file on this machine (sent as --set overrides)")
    add_overrides(p, "override one stage setting (repeatable)")
    p.add_argument("--wait", action="store_true", help="follow the job's logs and exit with its status")
    p.add_argument("--job-id", help="submission id (default: Ray picks one); a second submit with it is refused")
    p.add_argument("--token-file", metavar="PATH",
                   help="file holding the cluster's Ray auth token, sent only in the Jobs API's Authorization "
                        "header (default: Ray's own lookup when RAY_AUTH_MODE=token: $RAY_AUTH_TOKEN, "
                        "$RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token); see cluster/README.md")
    add_storage_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The job's exit status with --wait, else 0 once it is submitted."""
    from ..submit import config_as_overrides, job_paths, stages, submit, sweep_file_args

    if args.stage not in stages():
        raise InputError(f"no job entry point for stage {args.stage!r}; stages: {', '.join(stages())}")
    rest = list(args.stage_args)
    sweep = []
    if args.stage == "tune" and args.config:
        sweep, args.config = sweep_file_args(args.config), None
    overrides = (config_as_overrides(args.config) if args.config else []) + list(args.overrides)
    for item in overrides:
        rest += ["--set", item]
    rest, notes = job_paths(rest)  # relative paths would be read in the job's uploaded working directory
    rest = sweep + rest + ["--verbose"] * bool(args.verbose)
    for note in notes:
        print(f"[submit] {note}", flush=True)
    return submit(args.stage, args.address, rest, wait=args.wait, submission_id=args.job_id,
                  token_file=args.token_file)
