"""The exceptions stylempi raises, one small hierarchy.

Every error a user can cause (bad input, bad checkpoint, unwritable output,
unreachable storage) is a :class:`StylempiError`. Its message is one line that
says what went wrong *and what to do*; the CLI prints it as
``stylempi: error: <message>`` and exits with :attr:`StylempiError.exit_code`.
Anything else escaping the library is a bug and is reported as such.
"""
from __future__ import annotations


class StylempiError(Exception):
    """Base class: a problem the user can act on."""

    exit_code: int = 1


class UsageError(StylempiError):
    """Options that contradict each other or name something impossible."""

    exit_code = 2


class VideoOpenFailure(StylempiError):
    """The input cannot be opened or holds no usable video stream."""

    exit_code = 3


class VideoDecodeFailure(StylempiError):
    """A video stream decoded differently from what its index promised."""

    exit_code = 3


class ModelLoadFailure(StylempiError):
    """The --model file is missing, unreadable, unsafe or not a style network."""

    exit_code = 4


class OutputFailure(StylempiError):
    """OUTPUT (or the work dir) cannot be written, or cannot hold a stream."""

    exit_code = 5


class StorageFailure(StylempiError):
    """Remote storage is unreachable, refuses our credentials or lacks a blob."""

    exit_code = 6


class RankFailure(StylempiError):
    """Another MPI rank failed; the job was stopped everywhere."""

    exit_code = 7
