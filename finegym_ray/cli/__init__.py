"""``finegym-ray``: the command line. One module per command, each with its parser
(``add_parser``) and its body (``run``), which parses, starts Ray once where it needs it
and calls the library; options that several share are in ``options.py``, every
``--smoke-test`` preset in ``smoke.py``. The library never imports this package.

Bad input ends with one ``error:`` line and exit code 2: an error of the
:class:`~finegym_ray.errors.BadInput` family (a file that does not parse, a setting out
of range, a refused value or state, storage that cannot be reached) and a missing,
unreadable or wrong kind of file (FileNotFoundError, PermissionError,
IsADirectoryError, NotADirectoryError). Anything else, including a ValueError from
inside numpy, pyarrow, torch or Ray, is a bug and keeps its traceback
(``FINEGYM_RAY_DEBUG=1`` shows the traceback of bad input too)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..config import ConfigError
from ..dataset.errors import FormatError
from ..errors import BadInput
from ..runtime.connect import JOB_CONFIG_ENV
from . import (
    check,
    demo,
    download,
    evaluate,
    extract_features,
    import_mmaction2,
    import_poses,
    localize,
    manifest,
    preprocess,
    questions,
    runs,
    score_detections,
    study,
    submit,
    synth,
    train,
    train_poses,
    tune,
)
from .options import add_verbose

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C

# In the order --help lists them.
COMMANDS = (demo, synth, download, preprocess, import_mmaction2, train, train_poses, evaluate, questions,
            extract_features, tune, study, localize, submit, manifest, import_poses, check, score_detections, runs)

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finegym-ray",
        description="FineGym fine-grained gymnastics: synthetic data, manifests, preprocessing "
                    "and training on Ray. Run 'finegym-ray demo' for the whole pipeline on synthetic data.",
    )
    parser.add_argument("--version", action="version", version=f"finegym-ray {__version__}")
    add_verbose(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    for p in sub.choices.values():  # before or after the command; SUPPRESS keeps a leading one
        add_verbose(p, default=argparse.SUPPRESS)
    return parser


def _bug_of_a_ray_task(e: BaseException) -> bool:
    """Whether ``e`` is an error that a Ray task raised (ray.get raises it again as a
    RayTaskError that is also of the task's error class, its message the task's
    traceback) other than a format, config or storage error, which names its file or
    setting even so: a bug of the task."""
    from ..storage import StorageError

    exceptions = sys.modules.get("ray.exceptions")  # not imported: no Ray task ran
    return (exceptions is not None and isinstance(e, exceptions.RayTaskError)
            and not isinstance(e, (FormatError, ConfigError, StorageError)))


def bad_input_message(e: BaseException) -> str | None:
    """The one-line message for an expected failure (bad input), or None for a bug."""
    if isinstance(e, BadInput) and not _bug_of_a_ray_task(e):
        message = str(e)
    elif isinstance(e, FileNotFoundError):
        # storage's errors carry a reason ("No such bucket (at ENDPOINT)"); the OS's is implied.
        reason = e.strerror if e.strerror and e.strerror != os.strerror(e.errno or 0) else None
        message = f"not found: {e.filename}" + (f" ({reason})" if reason else "") if e.filename else f"not found: {e}"
    elif isinstance(e, (PermissionError, IsADirectoryError, NotADirectoryError)):
        message = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
    else:
        return None
    return " ".join(message.split())  # one line, whatever the message held (YAML errors span several)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get(JOB_CONFIG_ENV):
        # A submitted job's driver: torch before anything else. Loaded after Ray and the
        # video libraries, it died in the first job on a fresh cluster here (Intel oneMKL:
        # "Cannot load .../libtorch_cpu.so", exit 2; 9 such jobs of 9), never when loaded
        # first (0 of 3).
        import torch  # noqa: F401
    # Everything after "--" belongs to the submitted stage (argparse's subparsers cannot
    # hold a free-form tail).
    stage_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    args = build_parser().parse_args(argv)
    args.stage_args = stage_args
    if args.verbose:
        from ..runtime.output import set_verbose

        set_verbose(True)
    if getattr(args, "s3_endpoint", None):
        from ..storage import use_endpoint

        # Both variable names, so that a stale AWS_ENDPOINT_URL_S3 cannot win; init_ray
        # hands them to the Ray workers.
        use_endpoint(args.s3_endpoint)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if not getattr(args, "resumable", False):
            raise
        print(f"finegym-ray: interrupted; run the same command again to resume the {args.command}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        message = bad_input_message(e)
        if message is None or os.environ.get("FINEGYM_RAY_DEBUG"):
            raise  # a bug: the traceback is what its report needs
        print(f"finegym-ray: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT
