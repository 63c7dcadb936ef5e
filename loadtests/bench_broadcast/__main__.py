"""`python -m loadtests.bench_broadcast`."""

from loadtests.bench_broadcast.cli import main

raise SystemExit(main())
