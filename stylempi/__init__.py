"""stylempi: neural style transfer for whole videos, spread over MPI ranks."""
import os as _os

__version__ = "0.1.0"


def prefer_huge_pages(environ=_os.environ) -> None:
    """Have torch back its big CPU buffers with transparent huge pages, unless the user
    set ``THP_MEM_ALLOC_ENABLE`` (``0`` turns it off).

    Why: the job keeps its heap flat with a low mmap threshold (worker._keep_heap_flat),
    so every activation of every network call is a fresh mapping, and 2 MiB pages
    fault it in faster than 4 KiB ones (figures: docs/benchmarks.md, the levers table
    at the top). c10 reads the variable once, at torch's first CPU allocation: the
    command's entry point calls this before any tensor exists. Importing the package
    changes nothing.
    """
    environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
