"""``python -m stylempi.watch ...``: the same as ``stylempi watch ...``."""
import sys

from . import main

sys.exit(main())
