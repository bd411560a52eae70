"""What counts as a user error: a problem the user can fix, said in one line; anything else is a
bug.

The tools print a user error as one line and exit with status 2; any other exception keeps its
traceback, so that a library bug is not dressed up as advice.
"""

import errno
import sys

from bottlenecks import errors as backbone_errors
from tfrecords import errors as records_errors


class UserError(ValueError):
    """A bad flag, a missing input, a run that cannot go on as asked: the message names the fix."""


# The lower layers' own (they cannot import this module).
USER_ERRORS = (UserError, backbone_errors.BackboneError, records_errors.RecordsError)
# Files that are missing or in the way, and folders that cannot be written: the user's to fix.
FILE_ERRORS = (
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    FileExistsError,
)
FIXABLE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _storage_errors() -> tuple:
    """TensorFlow's errors for a URL (gs://, s3://) that is missing or not open to this user, once
    TensorFlow is loaded: looked up late so that --help need not import it."""
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is None:
        return ()
    errors = tensorflow.errors
    return errors.NotFoundError, errors.PermissionDeniedError, errors.UnauthenticatedError


def user_message(error: BaseException) -> str | None:
    """The one line to print when error is the user's to fix, else None (a bug: let its traceback
    show)."""
    if isinstance(error, USER_ERRORS + FILE_ERRORS) or (
        isinstance(error, OSError) and error.errno in FIXABLE_ERRNOS
    ):
        return str(error)
    if isinstance(
        error, _storage_errors()
    ):  # a cloud store's message may go on with a response body
        return (error.message.splitlines() or [type(error).__name__])[0]
    return None
