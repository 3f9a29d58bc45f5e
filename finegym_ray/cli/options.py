"""The options that several commands share, each written once, and the printer of a
command's ``[stage] ...`` lines."""

from __future__ import annotations

import argparse
from collections.abc import Callable

ADDRESS_HELP = ("Ray cluster to join, HOST:PORT; it wins over $RAY_ADDRESS (default: $RAY_ADDRESS, which a "
                "submitted job has, else the cluster `ray start` recorded on this machine, else a new local "
                "Ray); it says which")
VERBOSE_HELP = ("also print what Ray prints (its workers' lines, Ray Data's progress, warnings); by default "
                "those go to Ray's log files under its session folder (/tmp/ray/session_*/logs)")


def _endpoint_url(text: str) -> str:
    from ..storage import StorageOptions

    try:
        StorageOptions(endpoint_url=text)
    except ValueError as e:  # argparse turns this into one usage line and exit code 2
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_storage_options(p: argparse.ArgumentParser) -> None:
    """``--s3-endpoint``: every command reads or writes storage."""
    p.add_argument("--s3-endpoint", metavar="URL", type=_endpoint_url,
                   help="S3-compatible endpoint for s3:// URIs, here and on every Ray worker; it wins over "
                        "$AWS_ENDPOINT_URL_S3 and $AWS_ENDPOINT_URL (the default, else AWS). "
                        "Credentials come from the standard AWS chain (env vars, ~/.aws, instance profile).")


def add_annotations_option(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    """``--annotations``: FineGym's annotation folder or JSON."""
    p.add_argument("--annotations", required=required, metavar="DIR_OR_JSON",
                   help="FineGym annotation folder (annotation JSON, categories, splits) or the annotation JSON, "
                        "local or s3://")


def add_lease_option(p: argparse.ArgumentParser, folder: str) -> None:
    """``--break-lease`` of a command that writes ``folder`` (as the help names it)."""
    p.add_argument("--break-lease", action="store_true",
                   help=f"one job writes {folder} at a time ({folder}/lease.json names it); remove the lease of a "
                        "job that is gone (a killed job's is taken over without it: at once on its own host and "
                        "container, elsewhere once its heartbeat is 2 minutes old)")


def add_ray_options(p: argparse.ArgumentParser, *, lease: str | None = None) -> None:
    """The closing options of a command that runs on Ray: ``--break-lease`` when it
    writes the folder ``lease``, ``--address``, ``--s3-endpoint``."""
    if lease:
        add_lease_option(p, lease)
    p.add_argument("--address", help=ADDRESS_HELP)
    add_storage_options(p)


def add_overrides(p: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable), collected in ``args.overrides``."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_print_config(p: argparse.ArgumentParser) -> None:
    """``--print-config``: the resolved settings as YAML, then exit without starting Ray."""
    p.add_argument("--print-config", action="store_true",
                   help="print every setting as the command would use it (defaults, --config and --set "
                        "resolved) as YAML, and exit without starting Ray")


def print_config(**configs) -> int:
    """``--print-config``'s output: one config as YAML, or several under their names; exit status 0."""
    from ..config import to_yaml

    if len(configs) == 1:
        print(to_yaml(next(iter(configs.values()))), end="")
    else:
        for name, config in configs.items():
            print(f"{name}:")
            print("".join(f"  {line}\n" for line in to_yaml(config).splitlines()), end="")
    return 0


def add_verbose(p: argparse.ArgumentParser, **kwargs) -> None:
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP, **kwargs)


def printer(stage: str) -> Callable[[str], None]:
    """``say`` of a command: prints ``[stage] message`` at once."""
    def say(message: str) -> None:
        print(f"[{stage}] {message}", flush=True)
    return say


def runs_hint(runs: str) -> str:
    """The closing line of a command that wrote a run: where runs are and the command
    that lists them (``runs`` without its folder where that is the default one)."""
    import os

    from ..config import RUNS_FOLDER
    from ..train.config import absolute_uri

    default = absolute_uri(runs) == absolute_uri(RUNS_FOLDER)
    shown = os.path.relpath(runs) if default else runs
    return f"runs are in {shown}: 'finegym-ray runs{'' if default else ' ' + runs}' lists them"
