"""`python -m loadtests.rush`: the same options and exit codes as `boxoffice rush`."""

import sys

from loadtests.rush.cli import main, parse_args

raise SystemExit(main(parse_args(sys.argv[1:])))
