"""stylempi: neural style transfer for whole videos, spread over MPI ranks."""
import os as _os

__version__ = "0.1.0"

# Transparent huge pages for torch's big CPU buffers (c10 reads this once, at its first
# allocation, so it is set here, before stylempi imports torch). Every network call
# allocates its activations afresh (MBs each); with the 256 KiB mmap threshold that keeps
# a job's memory flat (worker._keep_heap_flat) each one was a fresh mmap, faulted in 4 KiB
# pages; 2 MiB pages made the job's network faster (figures: docs/benchmarks.md, the levers
# table at the top). THP_MEM_ALLOC_ENABLE=0 turns it off.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
