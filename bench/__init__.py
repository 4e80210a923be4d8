"""raftmem's benchmark suite: ``python -m bench run --suite quick|standard``.

Run on demand, never by the test command. It starts a fresh local raftmem
cluster (``raftmem up``) and, as the peer, a 3-member etcd cluster, drives both
from load-generator processes (asyncio + aiohttp in each) and writes JSON, a
markdown table and a PNG plot. See docs/benchmarks.md.

Modules:

* ``data``      deterministic memories, vectors and queries (loader, workers and the
                numpy reference all derive the same ones from a seed)
* ``stats``     percentiles and the aggregation of worker results (pure)
* ``report``    markdown tables, ratios vs etcd, targets (pure)
* ``loadgen``   the load-generator worker processes and their workloads
* ``systems``   starting and stopping raftmem, etcd and the constant-answer server
* ``procfs``    CPU time, RSS and disk usage from /proc (Linux)
* ``reference`` the single-process numpy brute-force search
* ``profiling`` py-spy on a node and a summary of where it spends its time
* ``suite``     the suites and the run itself
* ``plot``      the PNG (matplotlib, from the ``bench`` extra)
"""
