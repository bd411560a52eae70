"""Stops a long job at its next safe point on SIGINT or SIGTERM; a second signal stops it at
once."""

import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The job stopped on a signal; what it finished is kept and the same command resumes it."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number

    @property
    def exit_status(self) -> int:
        return 128 + self.signal_number  # the shell's convention for "ended by this signal"


class StopRequests:
    """While active, the first SIGINT/SIGTERM only sets `signal_number`; the job polls it at safe
    points.

    A second signal raises Interrupted where the job is, so a user who cannot wait need not kill -9
    (which would skip the clean-up of temporary files). Outside the main thread, where Python cannot
    install handlers, it does nothing and the signals keep their usual effect.
    """

    def __init__(self, program: str, safe_point: str):
        self.program = program
        self.safe_point = safe_point  # e.g. "after the current shard"
        self.signal_number = None
        # The second signal's Interrupted, once raised: code it interrupts may wrap it (TensorFlow
        # tracing a function re-raises it as a StagingError), so the caller looks here too.
        self.forced: Interrupted | None = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    @property
    def signal_name(self) -> str | None:
        return None if self.signal_number is None else signal.Signals(self.signal_number).name

    def _handle(self, signal_number, frame) -> None:
        name = signal.Signals(signal_number).name
        if self.signal_number is None:
            self.signal_number = signal_number
            print(
                f"\n{self.program}: {name} received: stopping {self.safe_point}; send it again to "
                "stop at once",
                file=sys.stderr,
                flush=True,
            )
            return
        self.forced = Interrupted(f"stopped at once on a second {name}", signal_number)
        raise self.forced

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for signal_number in SIGNALS:
                self._previous[signal_number] = signal.signal(signal_number, self._handle)
        return self

    def __exit__(self, *exception_info) -> None:
        for signal_number, handler in self._previous.items():
            signal.signal(signal_number, handler)
        self._previous.clear()
