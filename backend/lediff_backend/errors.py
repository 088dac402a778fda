"""Errors that reach users, each with its protocol error code and CLI exit code.

One table serves both processes' faces: the server turns an exception into an ``error``
event with ``code``; the CLI prints one line and exits with ``exit_code``.
"""


class LediffError(Exception):
    """Base class: an error with a message meant for the user."""

    code = "internal"
    exit_code = 1


class BadRequest(LediffError):
    """The request itself is malformed (unknown op or kind, wrong field types)."""

    code = "bad_request"
    exit_code = 2


class BadInput(LediffError):
    """An input file or parameter is unusable: missing, not an image, truncated, too big, NaN."""

    code = "bad_input"
    exit_code = 2


class MissingWeights(LediffError):
    """A model folder or file is missing or wrong; the message says what to place where."""

    code = "missing_weights"
    exit_code = 3


class OutOfMemory(LediffError):
    code = "out_of_memory"
    exit_code = 4


class Cancelled(LediffError):
    code = "cancelled"
    exit_code = 130
