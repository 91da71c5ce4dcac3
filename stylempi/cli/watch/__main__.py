"""``python -m stylempi.cli.watch ...``: the same as ``stylempi watch ...``."""
import sys

from .. import main

sys.exit(main(["watch", *sys.argv[1:]]))
