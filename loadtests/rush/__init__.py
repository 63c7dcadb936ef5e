"""`boxoffice rush`: a bounded Locust run against a local cluster (or --host), then the invariant check and a report.

Steps: start the services (embedded unless URLs are set) and N nodes behind HAProxy -- or take --host --
create a fresh room and session(s) through the admin API, connect the runner's own audit watchers, run
Locust headless on every core for a bounded time and user count (printing progress), then check the
booking invariants straight from PostgreSQL and every watcher's seat map against the server's. Writes
a report folder (Locust's HTML report and CSVs, summary.json, chart.png) and exits non-zero if any
invariant broke.

One job per module: `cli` (the options, registered as `boxoffice rush` through the `boxoffice.commands`
entry point), `scenarios` (what users face), `options` (one run's settings), `target` (where the load goes:
a local cluster started here, or --host), `admin` (set-up through the admin API), `audit` (the runner's
own WebSocket watchers), `database` (what the runner reads from PostgreSQL), `locust_run` (Locust in the
background, progress in the foreground), `summary` (summary.json, the printed summary, the chart) and
`run` (the steps above, in order).
"""
