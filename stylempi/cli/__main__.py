"""``python -m stylempi.cli ...``: the same as ``stylempi ...`` (how a watcher starts its jobs)."""
import sys

from . import main

sys.exit(main())
