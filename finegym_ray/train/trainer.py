"""Ray's TorchTrainer with a Ctrl-C that stops the run and lets the command say so.

Ray Train's ``fit()``, in a process's main thread, installs a SIGINT handler that aborts
the run and then calls ``sys.exit(0)`` inside ``ray.get``, which Ray's core turns into
``SystemExit(1)``: a Ctrl-C ended ``train`` with status 1 and no word on the terminal
(the handler's line goes to Ray's logger). It also leaves that handler installed after
``fit()`` returns.
"""

from __future__ import annotations

import signal
import threading

from ray.train.torch import TorchTrainer

from ..runtime.internals import AbortOnCtrlC


class StoppableTorchTrainer(AbortOnCtrlC, TorchTrainer):
    """A TorchTrainer whose first Ctrl-C aborts the run as Ray Train's does (the
    controller stops its workers, so no checkpoint is written after the command has
    released its lease) and then raises KeyboardInterrupt out of ``fit()``, which the
    command line reports (exit 130, "run the same command again"). A second Ctrl-C while
    the abort runs raises it at once. ``fit()`` puts back the SIGINT handler it found."""

    def fit(self):
        if threading.current_thread() is not threading.main_thread():
            return super().fit()  # Ray Train installs no handler there (a Tune trial)
        previous = signal.getsignal(signal.SIGINT)
        try:
            return super().fit()
        finally:
            if previous is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(signal.SIGINT, previous)
