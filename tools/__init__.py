"""Command-line entry points: parse flags, build a config, call one pipeline function."""

import os
import shlex
import sys

from pipeline import interrupt

# TensorFlow's C++ INFO logs (dataset buffer sizes and the like) would interleave with progress bars.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


# The errors a user can fix: bad flags, missing or damaged files, unknown names, offline weights, a busy
# output, a full disk or a folder that cannot be written (OSError).
USER_ERRORS = (ValueError, OSError, RuntimeError)


def _path_errors() -> tuple:
    """TensorFlow's errors for a URL (gs://, s3://) that is missing or not open to this user, once TensorFlow is
    loaded: looked up late so that --help need not import it."""
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is None:
        return ()
    errors = tensorflow.errors
    return errors.NotFoundError, errors.PermissionDeniedError, errors.UnauthenticatedError


def comma_separated(text, kind=str):
    """'a,b,,c' -> (kind(a), kind(b), kind(c)); None for an empty or missing flag."""
    return tuple(kind(part.strip()) for part in text.split(",") if part.strip()) if text else None


def run(program: str, job, config, command: str | None = None, argv=None, safe_point: str | None = None) -> int:
    """Runs one pipeline function; a user error becomes one line on stderr and exit status 2.

    A job stopped by SIGINT/SIGTERM (pipeline.interrupt) says how to resume it: `command` (the console
    script) with the same flags, and exits with the shell's status for that signal. With `safe_point`
    (e.g. "after the step in progress") the job is called as job(config, stop) inside StopRequests.
    """
    try:
        if safe_point is None:
            job(config)
        else:
            with interrupt.StopRequests(program, safe_point) as stop:
                job(config, stop)
    except USER_ERRORS as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return 2
    except _path_errors() as error:  # a cloud store's message may go on with a response body: its first line
        print(f"{program}: error: {(error.message.splitlines() or [type(error).__name__])[0]}", file=sys.stderr)
        return 2
    except interrupt.Interrupted as stopped:
        flags = list(sys.argv[1:] if argv is None else argv)
        print(f"{program}: {stopped}. To resume, run the same command: {shlex.join([command or program] + flags)}",
              file=sys.stderr)
        return stopped.exit_status
    return 0
