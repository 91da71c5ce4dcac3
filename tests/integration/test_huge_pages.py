"""The command turns on huge pages for torch, unless told not to.

c10 reads the switch at torch's first allocation, so only a fresh Python shows
it: each check runs one, which puts this beside the unit tests of the model
loader (tests/unit/test_model.py) rather than among them.
"""
from __future__ import annotations


#: In a fresh process: import the package (which must leave the environment alone), run the
#: command's entry point, then see whether torch's first big buffer took huge pages (c10
#: aligns those to the page; its other buffers to 64 bytes).
_HUGE_PAGES_PROBE = """
import contextlib, io, os
import stylempi.cli
imported = os.environ.get("THP_MEM_ALLOC_ENABLE")
with contextlib.redirect_stdout(io.StringIO()):
    stylempi.cli.main(["models"])
import torch
huge = all(torch.empty(8 << 20, dtype=torch.uint8).data_ptr() % 4096 == 0 for _ in range(3))
print(imported, os.environ.get("THP_MEM_ALLOC_ENABLE"), huge)
"""


def test_the_command_turns_on_huge_pages_for_torch_unless_told_not_to():
    """The job's network runs faster with them (docs/benchmarks.md); c10 reads the variable at
    torch's first allocation, so the entry point sets it before any; importing stylempi does not."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", _HUGE_PAGES_PROBE], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.split() == ["None", "1", "True"]
    out = subprocess.run([sys.executable, "-c", _HUGE_PAGES_PROBE], capture_output=True, text=True,
                         env=dict(env, THP_MEM_ALLOC_ENABLE="0"), check=True)
    assert out.stdout.split()[:2] == ["0", "0"]  # the user's choice wins
