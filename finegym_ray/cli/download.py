"""``finegym-ray download``: FineGym's videos with yt-dlp, as Ray tasks, a few at a time;
the same command resumes."""

from __future__ import annotations

import argparse
import os

from ..errors import InputError
from . import smoke
from .options import add_annotations_option, add_ray_options, printer


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text}")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser(
        "download", help="download FineGym's videos with yt-dlp (a few at a time, as Ray tasks); resumable",
        description="Download the videos the annotations name (or those of one subset's split, or an id list) "
                    "with yt-dlp into OUT as <video_id>.mp4: as Ray tasks, --concurrency at a time, one started "
                    "every --pause seconds at most. A file already in OUT is kept when check's probe finds it "
                    "whole, and downloaded again when not; a file reaches its name only whole (yt-dlp's .part "
                    "files stay in a hidden folder), so the same command after a kill resumes. Each id that "
                    "cannot be had is recorded in OUT/download_failures.csv (id, reason class: private, removed, "
                    "unavailable, network, other; yt-dlp's reason) and the run goes on; OUT/summary.json and the "
                    "closing lines say how many asked videos are there and what they cover of the labelled keys "
                    "per task and split. Needs the optional extra: pip install 'finegym-ray[download]'.",
        epilog="Exit status: 0 when every asked video is there, 1 when some could not be had (see the failures "
               "file), 2 for bad input (yt-dlp missing included). Use the videos under FineGym's terms; the "
               "dataset's authors also share the raw videos on request (docs/videos.md).")
    add_annotations_option(p)
    p.add_argument("--out", metavar="URI", help="folder of <video_id>.mp4 files, local or s3://bucket/prefix")
    p.add_argument("--subset", metavar="NAME",
                   help="only the videos with labelled keys in this subset's split files (gym99, gym288, ...)")
    p.add_argument("--split", metavar="NAME", help="only the videos with labelled keys in this split (train, val)")
    p.add_argument("--ids", metavar="FILE",
                   help="only these video ids: one per line, # comments (local or s3://); ids the annotations "
                        "lack are downloaded too")
    p.add_argument("--concurrency", type=_count, default=2, metavar="N",
                   help="downloads at once (default 2: YouTube throttles and blocks eager clients)")
    p.add_argument("--pause", type=_seconds, default=3.0, metavar="SECONDS",
                   help="at least this long between two downloads' starts (default 3)")
    p.add_argument("--rate-limit", metavar="RATE",
                   help="yt-dlp's --limit-rate per download, bytes per second: 500K, 4.2M (default: none)")
    p.add_argument("--format", metavar="FORMAT",
                   help="yt-dlp's format selection (default: a progressive H.264 MP4 at 720p, else H.264 MP4 "
                        "video only, else lower, else any MP4; docs/videos.md)")
    p.add_argument("--retries", type=int, default=10, metavar="N",
                   help="yt-dlp's retries of a failed request; a cut connection resumes where it stopped (default 10)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="seconds a connection may stay silent before yt-dlp retries (default 30)")
    p.add_argument("--cookies", metavar="FILE",
                   help="cookies file in Netscape format, as yt-dlp's --cookies takes it (age-restricted or "
                        "sign-in videos); read by the driver, never printed or written by finegym-ray")
    p.add_argument("--proxy", metavar="URL", help="yt-dlp's --proxy, e.g. socks5://host:1080 (its password is "
                                                   "never printed or recorded)")
    p.add_argument("--url-template", metavar="URL",
                   help="where a video id is fetched from, {id} standing for it: a mirror of the videos, e.g. "
                        "http://mirror.example/{id}.mp4 (default: its YouTube watch page, "
                        "https://www.youtube.com/watch?v={id})")
    p.add_argument("--smoke-test", action="store_true",
                   help="download the tiny SynGym's 2 videos from a local HTTP server on 127.0.0.1 (yt-dlp's "
                        "generic extractor, no internet) into --out or a temp folder")
    add_ray_options(p, lease="OUT")
    p.set_defaults(func=run, resumable=True)


def run(args: argparse.Namespace) -> int:
    from ..download.fetch import require_yt_dlp

    require_yt_dlp()  # the one-line refusal naming the extra, before anything is read
    if args.ids and (args.subset or args.split):
        raise InputError("--ids and --subset/--split choose the videos two ways: give one")
    if args.smoke_test:
        data = smoke.syngym()
        args.annotations = os.path.join(data, "annotations")
        args.out = args.out or os.path.join(data, "downloaded")
        with smoke.serve_folder(os.path.join(data, "videos")) as base:
            args.url_template, args.pause = f"{base}/{{id}}.mp4", 0.0
            return _download(args, on_this_node=True)
    missing = [f"--{n}" for n in ("annotations", "out") if not getattr(args, n)]
    if missing:
        raise InputError(f"download needs {', '.join(missing)} (or --smoke-test)")
    return _download(args, on_this_node=False)


def _download(args: argparse.Namespace, *, on_this_node: bool) -> int:
    from ..dataset.manifest import build_manifest_from
    from ..download.failures import failures_uri
    from ..download.fetch import DEFAULT_FORMAT, YOUTUBE_URL, FetchSettings, parse_rate, read_cookies, redact_url
    from ..download.job import format_summary, run_download
    from ..download.plan import read_ids, select_ids
    from ..runtime import connect

    settings = FetchSettings(url_template=args.url_template or YOUTUBE_URL, format=args.format or DEFAULT_FORMAT,
                             rate_limit=parse_rate(args.rate_limit) if args.rate_limit else None,
                             retries=args.retries, timeout_s=args.timeout, proxy=args.proxy,
                             cookies=read_cookies(args.cookies) if args.cookies else None)
    manifest = build_manifest_from(args.annotations)
    say = printer("download")
    if args.ids:
        ids = read_ids(args.ids)
        annotated = set(manifest.events.column("video_id").to_pylist())
        outside = [vid for vid in ids if vid not in annotated]
        what = f"the {len(ids)} of {args.ids}"
        if outside:
            say(f"{len(outside)} of them are not in the annotations (e.g. {', '.join(outside[:3])}): downloaded "
                f"all the same, each probed to its own end")
    else:
        ids = select_ids(manifest, subset=args.subset, split=args.split)
        what = " ".join(x for x in (args.subset, args.split) if x) or "all annotated"
    say(f"{len(ids)} videos ({what}) into {args.out}: {args.concurrency} at a time, {args.pause:g} s between starts, "
        f"rate limit {args.rate_limit or 'none'}, format {'default' if not args.format else args.format}, "
        f"from {redact_url(settings.url_template)}; failures go to {failures_uri(args.out)}")
    connect.init_ray(args.address)
    summary = run_download(manifest, ids, args.out, settings, concurrency=args.concurrency, pause_s=args.pause,
                           subset=args.subset, split=args.split, break_lease=args.break_lease,
                           on_this_node=on_this_node, say=say)
    print(format_summary(summary), flush=True)
    return 0 if summary["missing"] == 0 else 1
