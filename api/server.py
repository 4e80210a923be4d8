"""Run one raftmem node process: the raft host, the service, and the HTTP API.

Stops cleanly on SIGTERM / SIGINT: the HTTP listener closes first, then the
raft thread, so no request is accepted that the node could not finish.
"""

from __future__ import annotations

import asyncio
import os
import signal

import structlog
from aiohttp import web

from api.app import create_app
from api.logging import configure_logging
from raftmem.config import ClusterSpec, NodeOptions, NodeSpec, parse_addr
from raftmem.node import Node

log = structlog.get_logger("raftmem.server")


async def serve(spec: ClusterSpec, node_id: str, data_dir: str, secret: bytes, opts: NodeOptions,
                joining: NodeSpec | None = None) -> None:
    """``joining``: this node is not in ``spec`` (it joined a running cluster with
    ``raftmem node --join``); these are its addresses."""
    os.makedirs(data_dir, exist_ok=True)
    node = Node(spec, node_id, data_dir, secret, opts, joining=joining)
    await node.start()
    app = create_app(
        node, max_body_bytes=opts.max_body_bytes,
        admin_token=opts.admin_token, json_logs=opts.json_logs, access_log=opts.access_log,
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = parse_addr(node.me.api)
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log.info("api_listening", node=node_id, url=f"http://{host}:{port}")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("node_stopping", node=node_id)
        await runner.cleanup()
        await node.stop()


def run_node(spec: ClusterSpec, node_id: str, data_dir: str, secret: bytes, opts: NodeOptions,
             joining: NodeSpec | None = None) -> None:
    configure_logging(json=opts.json_logs)
    asyncio.run(serve(spec, node_id, data_dir, secret, opts, joining))
