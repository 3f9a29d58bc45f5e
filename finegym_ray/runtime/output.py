"""What a command prints while Ray runs: the project's own lines by default, Ray's
internals in Ray's log files (``<session dir>/logs``); ``--verbose`` shows everything as
Ray prints it.

Four kinds of noise reach a terminal, each stopped where it starts:

- lines that Ray workers print (Ray Train's per-report lines, empty
  ``(RayTrainWorker pid=...)`` lines, Ray Data's progress inside a worker, warnings):
  Ray forwards every worker line to the driver. We keep that forwarding (Ray's
  ``log_to_driver``) and swap Ray's printer for a filter that prints only lines with one
  of the project's prefixes (``[train] ...``), without Ray's ``(Actor pid=...)`` tag.
  Turning the forwarding off and carrying our worker lines another way (Ray Train's
  ``UserCallback.after_report``) would not do: that callback runs in Ray Train's
  controller actor, not in the driver, so its prints need forwarding too, and it sees
  reports only, not the lines a worker says while an epoch runs. Every worker line
  stays in Ray's ``worker-*.out``/``.err`` files.
- Ray's Python loggers in the driver (the token-authentication notice, Ray Data's
  execution plans and progress blocks): the ``ray`` logger and Ray Data's logging
  config write to files under the session's logs folder instead of the console.
- warnings (``RayDeprecationWarning`` from Ray's own code) go to the same file, and so
  do the messages raylets push to the driver (a worker pool's "N PYTHON worker processes
  have been started"), which Ray's error thread would print.
- error-level lines of Ray's C++ core worker in the driver (``core_worker.cc``: an
  actor with ``max_restarts`` and arguments in the object store, said of Ray Data's own
  actors): written to file descriptor 2 below Python. That descriptor is routed through
  a pipe whose reader passes every line on except those in the C++ log format, which
  go to the file; Python's own ``sys.stderr`` writes straight to the terminal. The
  reader is a process of its own: a library's fatal error below Python (Intel oneMKL's
  "Cannot load ...", then ``exit(2)``) ends this process before a thread of it could
  pass the line on, and the reader passes on all it got until the last writer is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator

from .internals import route_raylet_messages, session_logs_dir, worker_line_dispatcher

VERBOSE_ENV = "FINEGYM_RAY_VERBOSE"
# The prefixes of the lines that this project's code prints in Ray workers.
PROJECT_PREFIXES = ("[train]", "[preprocess]", "[evaluate]", "[synth]", "[demo]", "[tune]", "[study]",
                    "[localize]", "[check]", "[train-poses]")
DRIVER_LOG = "finegym_ray_driver.log"  # in the session's logs folder, beside Ray's own
# A line of Ray's C++ logging below fatal (a fatal one, F, still shows), e.g.
# "[2026-12-04 18:32:44,859 E 24019 24019] core_worker.cc:2465: ..."
_CPP_LOG_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d [\d:,.]+ [DIWE] \d+ \d+\] \S+\.(cc|h):\d+")


def set_verbose(on: bool) -> None:
    """``--verbose``: Ray prints as it does by default (for this process and what it starts)."""
    if on:
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.pop(VERBOSE_ENV, None)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


class _SessionLog(logging.Handler):
    """Records into the session's ``DRIVER_LOG``; those that come before Ray knows its
    session (the token notice, during ``ray.init``) are held and written when it does."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s\t%(levelname)s %(name)s %(filename)s:%(lineno)s -- "
                                            "%(message)s"))
        self._held: list[str] = []
        self._file = None
        self._lock_ = threading.Lock()

    def open(self, path: str) -> None:
        with self._lock_:
            if self._file is None:
                self._file = open(path, "a", buffering=1, encoding="utf-8", errors="replace")
                self._file.writelines(self._held)
                self._held = []

    def write(self, text: str) -> None:
        with self._lock_:
            if self._file is None:
                self._held.append(text)
            else:
                self._file.write(text)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(self.format(record) + "\n")
        except Exception:  # a log record must never stop the command
            self.handleError(record)


_handler: _SessionLog | None = None


def before_init() -> None:
    """Route Ray's driver-side noise to the session log (see the module docstring);
    called before ``ray.init``. Does nothing with ``--verbose``."""
    global _handler
    if verbose():
        return
    if _handler is None:
        _handler = _SessionLog()
        ray_logger = logging.getLogger("ray")
        for handler in list(ray_logger.handlers):  # Ray's console handler, set up when ray is imported
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                ray_logger.removeHandler(handler)
        # ray.init(configure_logging=False) clears the "ray" logger's handlers, and Ray's
        # own records during init (the token notice) come from ray._private: that logger
        # holds the handler too, and "ray" gets it back after init (_attach).
        for name in ("ray", "ray._private"):
            logging.getLogger(name).propagate = False
        _attach()
        logging.getLogger("ray._private").addHandler(_handler)
        _route_warnings()
    _quiet_ray_data()


def _attach() -> None:
    ray_logger = logging.getLogger("ray")
    if _handler not in ray_logger.handlers:
        ray_logger.addHandler(_handler)
    if ray_logger.level == logging.NOTSET or ray_logger.level > logging.INFO:
        ray_logger.setLevel(logging.INFO)


def _route_warnings() -> None:
    from ray.util.annotations import RayDeprecationWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RayDeprecationWarning) or f"{os.sep}ray{os.sep}" in filename:
            _handler.write(warnings.formatwarning(message, category, filename, lineno, line))
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _quiet_ray_data() -> None:
    # Ray Data configures its logger when first imported (ray/data/_internal/logging.py):
    # a file in the session's logs and a console handler; the console one goes. (Its
    # RAY_DATA_LOGGING_CONFIG would do the same, but Ray processes this one starts
    # would inherit the variable and need its file for as long as they run.)
    import ray.data  # noqa: F401 - its import configures the logger changed here

    data_logger = logging.getLogger("ray.data")
    for handler in list(data_logger.handlers):
        if getattr(handler, "name", None) == "console" or type(handler).__name__ == "PlainRayHandler":
            data_logger.removeHandler(handler)


def after_init() -> None:
    """Swap Ray's printer of worker lines for the project-lines filter, turn off Ray
    Data's progress output, open the session log and filter descriptor 2; called after
    ``ray.init``. Does nothing with ``--verbose``."""
    if verbose():
        return
    import ray

    logs = session_logs_dir()
    if _handler is not None:
        _attach()
        if logs:
            _handler.open(os.path.join(logs, DRIVER_LOG))
        route_raylet_messages(_handler.write)
    # Ray registers its printer under this name when log_to_driver is on (worker.connect).
    dispatcher = worker_line_dispatcher()
    if any(name == "ray_print_logs" for name, _ in dispatcher.handlers):
        dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler("ray_print_logs", print_project_lines)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    _filter_fd2(os.path.join(logs, DRIVER_LOG) if logs else None)


def print_project_lines(data: dict) -> None:
    """Print the lines of one batch of worker output that the project printed (those with
    a ``PROJECT_PREFIXES`` prefix), as printed; Ray's own stay in its worker logs."""
    sink = sys.stderr if data.get("is_err") else sys.stdout
    ours = [line for line in data.get("lines", ()) if line.startswith(PROJECT_PREFIXES)]
    if ours:
        sink.write("".join(line + "\n" for line in ours))
        sink.flush()


@contextlib.contextmanager
def worker_lines_held() -> Iterator[None]:
    """No worker line printed while it runs, the project's own included (all stay in
    Ray's worker log files): for a driver that says what matters itself, as a sweep does
    with a line per trial event while its trials' workers print their epochs at once.
    Does nothing with ``--verbose`` or when Ray's printer is not the project-lines filter
    (a Ray that this process joined without :func:`after_init` prints as Ray does)."""
    dispatcher = worker_line_dispatcher()
    ours = not verbose() and ("ray_print_logs", print_project_lines) in dispatcher.handlers
    if ours:
        dispatcher.remove_handler("ray_print_logs")
    try:
        yield
    finally:
        if ours:
            dispatcher.add_handler("ray_print_logs", print_project_lines)


_fd2_filtered = False
# The pipe's reader (see the module docstring): Ray's C++ log lines to the file argv[2]
# (none: dropped), every other line to its stdout, the terminal; Ctrl-C is for the
# command, and the reader stops when the last writer of the pipe is gone.
_FD2_READER = r"""
import os, re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
cpp, log = re.compile(sys.argv[1].encode()), open(sys.argv[2], "ab") if sys.argv[2] else None
pending = b""
while chunk := os.read(0, 65536):
    *lines, pending = (pending + chunk).split(b"\n")
    for line in lines:
        if not cpp.match(line):
            os.write(1, line + b"\n")
        elif log:
            log.write(line + b"\n")
            log.flush()
if pending:
    os.write(1, pending)
"""


def _filter_fd2(log: str | None) -> None:
    """Route descriptor 2 through a pipe whose reader holds back Ray's C++ log lines
    into the file ``log`` (see the module docstring); Python's ``sys.stderr`` keeps a
    descriptor of its own on the terminal, so nothing this project prints waits on the
    pipe."""
    global _fd2_filtered
    if _fd2_filtered or _handler is None:
        return
    import subprocess

    try:
        sys.stderr.flush()
        terminal = os.dup(2)
        read_end, write_end = os.pipe()
        subprocess.Popen([sys.executable, "-I", "-S", "-c", _FD2_READER, _CPP_LOG_LINE.pattern.decode(), log or ""],
                         stdin=read_end, stdout=terminal, stderr=subprocess.DEVNULL)
        os.close(read_end)
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:
        return
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    _fd2_filtered = True


# Ray's Python log lines below error level, as a job's log holds them (the job
# supervisor's "Runtime env is setting up", Ray Data's in a driver run with --verbose).
_RAY_PY_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\t(DEBUG|INFO|WARNING) ")
_JOB_ENTRYPOINT_LINE = "Running entrypoint for job "  # submit has printed the entry point already


class JobLogFilter:
    """The lines of a job's log that ``submit --wait`` prints: all of them with
    ``--verbose``, else all but Ray's own below error level. Fed the log's text in the
    chunks it arrives in (a line may span two). ``seen``: how many of the log's lines
    it was fed, printed or not."""

    def __init__(self) -> None:
        self._pending = ""
        self._all = verbose()
        self.seen = 0

    def feed(self, text: str) -> str:
        """What to print of ``text`` now: its complete lines that pass."""
        *lines, self._pending = (self._pending + text).split("\n")
        self.seen += len(lines)
        return "".join(line + "\n" for line in lines if self._keep(line))

    def close(self) -> str:
        """What to print of a last line without an end."""
        rest, self._pending = self._pending, ""
        self.seen += bool(rest)
        return rest + "\n" if rest and self._keep(rest) else ""

    def _keep(self, line: str) -> bool:
        return self._all or not (_RAY_PY_LOG_LINE.match(line) or line.startswith(_JOB_ENTRYPOINT_LINE))


def quiet_client() -> None:
    """For a command that talks to a cluster without joining it (``submit``): Ray's
    client-side log lines (packaging, uploads, the log stream closing) go to
    ``<tmp>/ray/finegym_ray_client.log`` instead of the console. Nothing with --verbose."""
    import tempfile

    before_init()
    if _handler is not None:
        folder = os.path.join(tempfile.gettempdir(), "ray")
        try:
            os.makedirs(folder, exist_ok=True)
            _handler.open(os.path.join(folder, "finegym_ray_client.log"))
        except OSError:
            pass  # held in memory: a few lines
