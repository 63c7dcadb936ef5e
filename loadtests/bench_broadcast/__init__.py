"""Broadcast benchmark: N nodes behind HAProxy, thousands of watching sockets, a steady stream of holds.

What it measures, on one session watched by every socket:
- latency from a change's commit (`committedAt` of the frame; for a coalesced frame its oldest commit)
  to its receipt, over every frame on every socket: p50 / p99 / max;
- frames and seat changes delivered per second;
- missed changes: after quiescence every socket's map (snapshot + changes applied only when their
  version is higher) must equal GET /sessions/{id}/seats; a seat that differs is a missed change;
- server memory per socket: VmRSS of the node processes before and after the sockets connect;
- the outbox hop from commit to the row's `published_at` (the start of the relay's claim transaction,
  just before it produces).

It is a benchmark, not a test: it starts its own embedded services (unless DATABASE_URL, REDIS_URL,
KAFKA_BOOTSTRAP_SERVERS are set) and its own local cluster, talks to it through the wire contract
only, prints its figures with the command that produced them and writes them as JSON.

    .venv/bin/python -m loadtests.bench_broadcast --sockets 2000 --rate 100 --duration 30

One job per module: `watchers` (the watching sockets, in client processes), `load` (the room, the buyers and
the stream of holds, through the REST contract), `figures` (what is read from the outbox table, the nodes'
/metrics and /proc), `bench` (one run on a started cluster: the sockets' two waves, the load, the result),
`report` (the printed figures) and `cli` (the options, the services and the cluster).
"""
