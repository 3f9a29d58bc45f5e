"""One video with yt-dlp: fetched into a private partial folder, probed with ``check``'s
probe, then put in place whole as ``OUT/<id>.mp4`` (or uploaded, for ``s3://``).

What makes it safe to kill at any moment: yt-dlp writes ``<id>.<ext>.part`` in a folder
of its own attempt (``OUT/.partial/<host>-<pid>-<id>-<random>/`` for a local folder,
where the final rename stays on one file system; the node's temp folder for S3), which
no reader of the videos looks into (``video/files.py`` skips hidden folders). A file
reaches its final name only by a rename (or an S3 upload, which appears whole or not at
all) after the probe said it is whole. A later attempt on the same host removes the
folders of attempts whose process is gone (a killed worker's). A video cut short starts
again from its beginning in the next run.

The format (``DEFAULT_FORMAT``): FineGym's videos are 720p (1280x720). The first of these
that YouTube offers is taken: a progressive (video and audio in one file) H.264 MP4 of
720 lines, the same without audio, then the same up to 720 lines, then any MP4, then
yt-dlp's best. Without audio is fine (nothing here reads audio) and needs no ffmpeg,
which yt-dlp would need to merge separate video and audio streams; for most videos
YouTube now offers a progressive MP4 at 360p only. ``--format`` takes yt-dlp's own syntax.

Credentials: the cookies travel as text (never written to disk by this module; yt-dlp
reads them from memory), and every message that leaves here passes :func:`redact`,
which removes the cookies' values and the proxy's user and password. No Ray here.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .. import storage
from ..dataset.keys import safe_name
from ..errors import InputError
from ..video.files import VIDEO_EXTENSIONS
from .failures import OTHER, classify, one_line

YOUTUBE_URL = "https://www.youtube.com/watch?v={id}"
DEFAULT_FORMAT = ("best[ext=mp4][vcodec^=avc1][height=720]/bestvideo[ext=mp4][vcodec^=avc1][height=720]/"
                  "best[ext=mp4][vcodec^=avc1][height<=720]/bestvideo[ext=mp4][vcodec^=avc1][height<=720]/"
                  "best[ext=mp4]/best")
PARTIAL = ".partial"
INSTALL_HINT = "pip install 'finegym-ray[download]'"
DOWNLOADED, FAILED = "downloaded", "failed"


def require_yt_dlp() -> None:
    """Refuse (InputError, one line naming the extra) when yt-dlp is not installed."""
    try:
        import yt_dlp  # noqa: F401
    except ImportError:
        raise InputError(f"download needs yt-dlp, which is not installed: {INSTALL_HINT}") from None


@dataclass(frozen=True)
class FetchSettings:
    """How each video is fetched: yt-dlp's options. ``rate_limit``: bytes per second per
    download (None: no limit); ``timeout_s``: seconds a connection may stay silent;
    ``retries``: yt-dlp's retries of a failed request (a cut connection resumes where it
    stopped when the server allows). ``cookies`` is the cookies file's text (Netscape
    format) and ``proxy`` may hold a password: neither appears in ``repr`` or
    :meth:`record`."""

    url_template: str = YOUTUBE_URL
    format: str = DEFAULT_FORMAT
    rate_limit: int | None = None
    retries: int = 10
    timeout_s: float = 30.0
    proxy: str | None = field(default=None, repr=False)
    cookies: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if "{id}" not in self.url_template:
            raise InputError(f"--url-template {redact_url(self.url_template)!r} must hold {{id}}, where each "
                             f"video id goes")
        if urlsplit(self.url_template).scheme not in ("http", "https"):
            raise InputError(f"--url-template {redact_url(self.url_template)!r} must be an http(s) URL")
        if self.retries < 0:
            raise InputError(f"--retries must be >= 0, got {self.retries}")
        if not 0 < self.timeout_s < float("inf"):
            raise InputError(f"--timeout must be > 0 seconds, got {self.timeout_s}")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise InputError(f"--rate-limit must be at least 1 byte per second, got {self.rate_limit}")

    def url(self, video_id: str) -> str:
        return self.url_template.replace("{id}", video_id)

    def record(self) -> dict[str, Any]:
        """The settings as the summary records them: no cookie, no proxy credentials."""
        return {"url_template": redact_url(self.url_template), "format": self.format,
                "rate_limit": self.rate_limit, "retries": self.retries, "timeout_s": self.timeout_s,
                "proxy": redact_url(self.proxy) if self.proxy else None, "cookies": self.cookies is not None}

    def secrets(self) -> list[str]:
        """What :func:`redact` removes: the cookies' values, the proxy's user and password."""
        found = cookie_values(self.cookies) if self.cookies else []
        if self.proxy:
            parts = urlsplit(self.proxy)
            found += [s for s in (parts.password, parts.username) if s]
        return found


def parse_rate(text: str) -> int:
    """Bytes per second from yt-dlp's notation: ``500K``, ``4.2M``, ``1G`` (powers of
    1024, as yt-dlp reads them) or plain bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:i?B)?\s*", text)
    if not m:
        raise InputError(f"--rate-limit {text!r}: expected bytes per second such as 500K, 4.2M or 1G")
    value = int(float(m[1]) * 1024 ** " kmg".index(m[2].lower() or " "))
    if value < 1:
        raise InputError(f"--rate-limit {text!r}: must be at least 1 byte per second")
    return value


def read_cookies(path: str) -> str:
    """The text of a cookies file in Netscape format (what yt-dlp's ``--cookies`` takes),
    checked line by line so that yt-dlp never echoes a malformed line, value and all;
    a refusal names the line number, never its content. The format's first line is
    added where the file lacks it (browser extensions often leave it out; yt-dlp
    refuses a file without it)."""
    text = storage.read_text(path)
    for n, line in enumerate(text.splitlines(), start=1):
        entry = line.removeprefix("#HttpOnly_")
        if entry.startswith("#") or not entry.strip():
            continue
        fields = entry.split("\t")
        if len(fields) != 7 or (fields[4] and not re.fullmatch(r"\d+(?:\.\d+)?", fields[4])):
            raise InputError(f"--cookies {path}: line {n} is not a Netscape cookie line (7 tab-separated "
                             f"fields: domain, subdomains, path, https only, expiry, name, value); export the "
                             f"cookies in Netscape format (yt-dlp's FAQ says how)")
    return text if re.match(r"#( Netscape)? HTTP Cookie File", text) else "# Netscape HTTP Cookie File\n" + text


def cookie_values(text: str) -> list[str]:
    """The values of the cookies in Netscape-format ``text``."""
    values = []
    for line in text.splitlines():
        fields = line.removeprefix("#HttpOnly_").split("\t")
        if len(fields) == 7 and not fields[0].startswith("#") and fields[6].strip():
            values.append(fields[6].strip())
    return values


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every secret (longest first) replaced by ``***``."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def redact_url(url: str) -> str:
    """``url`` without the user and password of its authority (``scheme://***@host``)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def whole_problem(uri: str, video_id: str, annotated_end_s: float) -> str:
    """Why the video file at ``uri`` is not whole ("" when it is): ``check``'s probe at
    its annotated end (``annotated_end_s`` seconds; 0 for an id the annotations lack),
    then once more near the end of the video stream, which a download cut short lacks
    even where the annotated part is there. A variable frame rate is no problem here
    (``check`` reports it)."""
    from ..video.check import END_SLACK_S, OK, check_video  # PyAV: not for every command's --help

    first = check_video(uri, video_id, events=0, annotated_end_s=annotated_end_s, allow_vfr=True)
    if first.status != OK:
        return first.problem
    if first.duration_s and first.duration_s > annotated_end_s + END_SLACK_S:
        last = check_video(uri, video_id, events=0, annotated_end_s=first.duration_s, allow_vfr=True)
        if last.status != OK:
            return last.problem
    return ""


@dataclass(frozen=True)
class Outcome:
    """One id's attempt: ``status`` DOWNLOADED or FAILED; ``uri`` where the video is
    now; ``size`` in bytes, ``seconds`` of wall time; for a failure its ``reason`` (one
    line, redacted) and ``reason_class`` (``failures.CLASSES``)."""

    video_id: str
    status: str
    uri: str | None = None
    size: int = 0
    seconds: float = 0.0
    reason: str = ""
    reason_class: str = ""


def partial_root(out: str) -> str:
    """Where attempts download: ``OUT/.partial`` for a local folder (the final rename stays
    on its file system), else this node's temp folder."""
    loc = storage.parse_uri(out)
    if loc.is_s3:
        return os.path.join(tempfile.gettempdir(), "finegym-ray-download")
    return os.path.join(loc.key, PARTIAL)


def remove_abandoned_attempts(root: str) -> list[str]:
    """Remove the attempt folders under ``root`` made on this host by processes that no
    longer run (a worker killed mid-download); returns them."""
    host = socket.gethostname()
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root):
            m = re.fullmatch(rf"{re.escape(host)}-(\d+)-.*", entry.name)
            if m and entry.is_dir(follow_symlinks=False) and not _alive(int(m[1])):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class _Log:
    """yt-dlp's logger: keeps its error messages, drops the rest (nothing goes to the
    terminal or the worker's log)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def debug(self, message: str) -> None:
        pass

    info = warning = debug

    def error(self, message: str) -> None:
        self.errors.append(message)


def yt_dlp_options(settings: FetchSettings, folder: str, video_id: str, log: _Log) -> dict[str, Any]:
    """yt-dlp's options for one attempt that writes ``folder/<id>.<ext>``."""
    options: dict[str, Any] = {
        "format": settings.format, "outtmpl": os.path.join(folder, f"{video_id}.%(ext)s"),
        "logger": log, "quiet": True, "no_warnings": True, "noprogress": True, "noplaylist": True,
        "retries": settings.retries, "fragment_retries": settings.retries, "socket_timeout": settings.timeout_s,
        "overwrites": True, "consoletitle": False,
    }
    if settings.rate_limit:
        options["ratelimit"] = settings.rate_limit
    if settings.proxy:
        options["proxy"] = settings.proxy
    if settings.cookies is not None:
        # A text stream: yt-dlp reads the cookies from it and writes them back into it
        # when it closes, never to a file.
        options["cookiefile"] = io.StringIO(settings.cookies)
    return options


def fetch_video(video_id: str, out: str, settings: FetchSettings, *, annotated_end_s: float = 0.0,
                replaces: str | None = None) -> Outcome:
    """Download ``video_id`` into ``out`` (a folder or s3:// prefix) as ``<id>.<ext>``
    (``.mp4`` with the default format), whole or not at all. ``annotated_end_s``: the end
    of its last annotated event in seconds (0: unknown), where the probe looks;
    ``replaces``: the URI of a file of this id that is there but not whole, removed once
    the new one is in place (when its name differs). Never raises for the video's sake:
    a failure is an Outcome with its reason."""
    t0 = time.monotonic()
    secrets = settings.secrets()
    root = partial_root(out)
    remove_abandoned_attempts(root)
    folder = os.path.join(root, f"{socket.gethostname()}-{os.getpid()}-{video_id}-{uuid.uuid4().hex[:8]}")
    os.makedirs(folder)  # and the root: another attempt may have just removed it (below)

    def failed(reason: str, reason_class: str | None = None) -> Outcome:
        reason = redact(one_line(reason), secrets)
        return Outcome(video_id, FAILED, seconds=time.monotonic() - t0, reason=reason,
                       reason_class=reason_class or classify(reason))

    try:
        try:
            path = _download(video_id, folder, settings)
        except _Failed as e:
            return failed(str(e))
        ext = os.path.splitext(path)[1].lower()
        if ext not in VIDEO_EXTENSIONS:
            return failed(f"yt-dlp wrote a {ext or 'nameless'} file, which preprocessing does not read "
                          f"({', '.join(VIDEO_EXTENSIONS)}): choose another --format", OTHER)
        problem = whole_problem(path, video_id, annotated_end_s)
        if problem:
            return failed(f"the download is not a whole video: {problem}", OTHER)
        size = os.path.getsize(path)
        final = safe_name(out, video_id, ext)
        try:
            _put_in_place(path, final)
        except OSError as e:  # storage gave up (after its retries): this id fails, the run goes on
            return failed(f"could not write {final}: {e}")
        if replaces and replaces != final:
            storage.delete(replaces)
        return Outcome(video_id, DOWNLOADED, uri=final, size=size, seconds=time.monotonic() - t0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # the last attempt leaves no empty folder behind
            os.rmdir(root)


class _Failed(Exception):
    """yt-dlp could not get the video; the message is its reason."""


def _download(video_id: str, folder: str, settings: FetchSettings) -> str:
    """Run yt-dlp for one id; the path of the file it wrote. _Failed with yt-dlp's message."""
    import yt_dlp

    log = _Log()
    try:
        with yt_dlp.YoutubeDL(yt_dlp_options(settings, folder, video_id, log)) as ydl:
            info = ydl.extract_info(settings.url(video_id), download=True)
    except yt_dlp.utils.DownloadError as e:
        raise _Failed(str(e) or (log.errors[-1] if log.errors else "yt-dlp gave up without a message")) from None
    except Exception as e:  # noqa: BLE001 - a yt-dlp bug on one video must not stop the run
        raise _Failed(f"yt-dlp failed: {type(e).__name__}: {e}") from None
    downloads = (info or {}).get("requested_downloads") or []
    path = downloads[0].get("filepath") if downloads else None
    if not path or not os.path.isfile(path):
        if log.errors:
            raise _Failed(log.errors[-1])
        raise _Failed("yt-dlp finished without writing a file")
    return path


def _put_in_place(path: str, final: str) -> None:
    """Move the whole file at ``path`` to ``final``: a rename on the same local file
    system (after fsync: a crash cannot leave a name with a file still in the page
    cache), an atomic upload on S3."""
    loc = storage.parse_uri(final)
    if loc.is_s3:
        storage.upload_file(path, final)
        return
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    os.replace(path, loc.key)
    fd = os.open(os.path.dirname(os.path.abspath(loc.key)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
