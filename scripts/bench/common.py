"""Connections shared by the benchmark's Python helpers (redis-py, from .venv/)."""
import os
import signal
import time

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


class Paced:
    """A writer's clock: `ticks()` yields 0, 1, 2, ... at `rate` per second from its first tick, until one of
    `signals` arrives (checked again after each wait, so no tick starts after the signal). `count` is the
    number of ticks whose work finished; `seconds()` the time since the first tick."""

    def __init__(self, rate: float, signals=(signal.SIGTERM,)):
        self.rate = rate
        self.stopped = False
        self.count = 0
        self.started = time.time()
        for s in signals:
            signal.signal(s, self._stop)

    def _stop(self, _sig, _frame) -> None:
        self.stopped = True

    def ticks(self):
        self.started = time.time()
        while not self.stopped:
            delay = self.started + self.count / self.rate - time.time()
            if delay > 0:
                time.sleep(delay)
                if self.stopped:
                    return
            yield self.count
            self.count += 1

    def seconds(self) -> float:
        return time.time() - self.started
