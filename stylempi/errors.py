"""The exceptions stylempi raises, one small hierarchy, and the exit code of each.

Every error a user can cause (bad input, bad checkpoint, unwritable output,
unreachable storage) is a :class:`StylempiError`. Its message is one line that
says what went wrong *and what to do*; the CLI prints it as
``stylempi: error: <message>`` and exits with :attr:`StylempiError.exit_code`.
Anything else escaping the library is a bug and is reported as such
(:data:`EXIT_INTERNAL`); Ctrl-C and SIGTERM end with :data:`EXIT_INTERRUPTED`.
:data:`EXIT_CODES` is the table the CLI and the README document.
"""
from __future__ import annotations


class StylempiError(Exception):
    """Base class: a problem the user can act on.

    ``exit_code`` overrides the class's code for this one error: an error
    re-worded on its way out (a hint added) keeps the code of its cause.
    """

    exit_code: int = 1

    def __init__(self, *args: object, exit_code: int | None = None):
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code


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


class ResourceFailure(StylempiError):
    """The job does not fit the machine: a frame or batch needs more memory than there is."""

    exit_code = 8


class PipeClosed(StylempiError):
    """Whatever read stdout went away (``stylempi models | head -1``): stop quietly, as Unix
    tools killed by SIGPIPE do (their shell shows 128 + 13)."""

    exit_code = 141


class InternalError(StylempiError):
    """An exception the library did not expect: a bug, to be reported."""

    exit_code = 70


class Interrupted(StylempiError):
    """Ctrl-C or SIGTERM (Slurm's scancel, a preempting scheduler) stopped the job."""

    exit_code = 130


EXIT_OK = 0
EXIT_INTERNAL = InternalError.exit_code
EXIT_INTERRUPTED = Interrupted.exit_code

#: Every exit code of ``stylempi``, as the CLI's docstring and the README list them.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    StylempiError.exit_code: "verify found differences or a general error",
    UsageError.exit_code: "usage",
    VideoOpenFailure.exit_code: "input video",
    ModelLoadFailure.exit_code: "model",
    OutputFailure.exit_code: "output",
    StorageFailure.exit_code: "storage",
    RankFailure.exit_code: "another rank failed",
    ResourceFailure.exit_code: "out of memory",
    EXIT_INTERNAL: "internal error (a bug: please report it)",
    EXIT_INTERRUPTED: "interrupted",
    PipeClosed.exit_code: "the reader of stdout went away (as `| head`)",
}


def out_of_memory(error: BaseException) -> bool:
    """Whether ERROR says an allocation failed: Python's MemoryError (NumPy's too), torch's
    CPU allocator (a RuntimeError naming it) or CUDA's OutOfMemoryError, by name so that
    this module needs no torch."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text
                                                or "Cannot allocate memory" in text)


def memory_failure(error: BaseException, hint: str = "") -> ResourceFailure:
    """The one line for an allocation that failed (:func:`out_of_memory`)."""
    return ResourceFailure("out of memory: a frame or batch needs more memory than this machine (or its "
                           "limit) gives; rerun with a smaller --batch-size (1 uses the least), or "
                           f"--style-scale below 1 (the network then sees smaller frames), or fewer ranks "
                           f"per node{hint}")


def one_line(text: str) -> str:
    """Errors are one plain line: no newlines or terminal control codes (names can hold them)."""
    return "".join(c if c.isprintable() else " " for c in " ".join(text.split("\n")))
