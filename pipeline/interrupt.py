"""Stops a long job at its next safe point on SIGINT or SIGTERM; a second signal stops it at
once."""

import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Set by a command-line process (tools.run), which ends once its job has: there a stopped job's
# handlers stay installed until the process exits (see StopRequests). A library caller (a notebook,
# a test) gets its own handlers back when the job returns.
_ENDS_WITH_JOB = False


def process_ends_with_job() -> None:
    """Declares that this process exits when its job returns (a command-line tool)."""
    global _ENDS_WITH_JOB
    _ENDS_WITH_JOB = True


class Interrupted(Exception):
    """The job stopped on a signal; what it finished is kept and the same command resumes it."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number

    @property
    def exit_status(self) -> int:
        return 128 + self.signal_number  # the shell's convention for "ended by this signal"


def stop_if_requested(stop, where: str) -> None:
    """At a safe point between units of work (a stage, a run, an arm): a stop requested since the
    last one ends the job here, whatever the unit (a solved stage never looks at the stop)."""
    if stop is not None and stop.requested:
        raise Interrupted(f"stopped on {stop.signal_name} {where}", stop.signal_number)


class StopRequests:
    """While active, the first SIGINT/SIGTERM only sets `signal_number`; the job polls it at safe
    points.

    A second signal raises Interrupted where the job is, so a user who cannot wait need not kill -9
    (which would skip the clean-up of temporary files). In a command-line process
    (process_ends_with_job), once a first signal has come the handler stays installed until the
    process exits: after the job stops at its safe point, what follows (the message, TensorFlow's
    clean-up at exit) is still on the way out, and a second signal there ends the process at once
    with the signal's exit status, instead of a KeyboardInterrupt raised wherever the interpreter
    happens to be. Outside the main thread, where Python cannot install handlers, it does nothing
    and the signals keep their usual effect.
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

    def _after_stop(self, signal_number, frame) -> None:
        """A second signal after the job left its safe point: nothing of it is running any more,
        so the process ends here, saying so."""
        name = signal.Signals(signal_number).name
        print(
            f"\n{self.program}: stopped at once on a second {name}, after the job had stopped "
            f"{self.safe_point}. To resume, run the same command.",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(128 + signal_number)

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for signal_number in SIGNALS:
                self._previous[signal_number] = signal.signal(signal_number, self._handle)
        return self

    def __exit__(self, exception_type, exception, traceback) -> None:
        keep = self.requested and _ENDS_WITH_JOB  # the process is on its way out
        for signal_number, handler in self._previous.items():
            signal.signal(signal_number, self._after_stop if keep else handler)
        self._previous.clear()
        if self.forced is not None and exception is not None and exception is not self.forced:
            # The second signal's Interrupted, wrapped by the code it interrupted (TensorFlow
            # tracing a function re-raises it as a StagingError): the job stopped on a signal.
            raise self.forced from None
