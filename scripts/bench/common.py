"""Connections shared by the benchmark's Python helpers (redis-py, from .venv/)."""
import os

import redis


def plain(port: int) -> redis.Redis:
    """The plain source (or the replica): no TLS, no AUTH, like an unencrypted ElastiCache group."""
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=60)


def tls(port: int, ca_file: str) -> redis.Redis:
    """The TLS + AUTH target; the AUTH token comes from BENCH_TOKEN, never from the command line."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        ssl=True,
        ssl_ca_certs=ca_file,
        password=os.environ["BENCH_TOKEN"],
        socket_timeout=60,
    )
