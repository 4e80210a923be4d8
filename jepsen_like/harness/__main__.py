import sys

from jepsen_like.harness.cli import main

sys.exit(main(["run", *sys.argv[1:]]))
