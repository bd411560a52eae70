"""Command-line entry points: flags -> a config (tools.flags) -> one pipeline function
(tools.run)."""

import os
import shlex
import sys

from pipeline import errors
from pipeline import interrupt

# TensorFlow's C++ INFO logs (dataset buffer sizes and the like) would interleave with progress
# bars.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def run(
    program: str,
    job,
    config,
    command: str | None = None,
    argv=None,
    safe_point: str | None = None,
    status=None,
) -> int:
    """Runs one pipeline function and returns the exit status: 0, or status(what the job returned)
    when given.

    A user error (pipeline.errors) becomes one line on stderr and exit status 2; any other exception
    is a bug and keeps its traceback. A job stopped by SIGINT/SIGTERM (pipeline.interrupt) says how
    to resume it: `command` (the console script) with the same flags, and exits with the shell's
    status for that signal. With `safe_point` (e.g. "after the step in progress") the job is called
    as job(config, stop) inside StopRequests.
    """
    stop = None
    if argv is None:  # run as a program (its flags from sys.argv): the process ends with the job
        interrupt.process_ends_with_job()
    try:
        if safe_point is None:
            outcome = job(config)
        else:
            with interrupt.StopRequests(program, safe_point) as stop:
                outcome = job(config, stop)
    except interrupt.Interrupted as stopped:
        return _stopped(program, stopped, command, argv)
    except Exception as error:
        if stop is not None and stop.forced is not None:  # the second signal, wrapped on its way
            return _stopped(program, stop.forced, command, argv)
        message = errors.user_message(error)
        if message is None:
            raise
        print(f"{program}: error: {message}", file=sys.stderr)
        return 2
    return 0 if status is None else status(outcome)


def _stopped(program: str, stopped: interrupt.Interrupted, command, argv) -> int:
    """Says how to resume a job stopped by a signal; the shell's exit status for that signal."""
    flags = list(sys.argv[1:] if argv is None else argv)
    print(
        f"{program}: {stopped}. To resume, run the same command: "
        f"{shlex.join([command or program] + flags)}",
        file=sys.stderr,
    )
    return stopped.exit_status
