"""Peer rows for ``bench/bus.py``: Dramatiq and arq with no-op jobs on the same server.

They put the ACP figures next to what established Python job queues reach on
the same machine and server. Each peer runs in a subprocess with a hard
timeout, so a hung worker thread cannot hang the benchmark and the peers'
imports and threads never share an interpreter with the measured runtime.

This file is also the child's entry point, so it imports nothing but the
standard library at module level: arq pins ``redis<6`` and therefore often
lives in a separate virtualenv (``--arq-python``) without ``acp`` or msgpack.

    python bench/_peers.py dramatiq redis://127.0.0.1:6379/0 20000
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

PEERS: Final = ("dramatiq", "arq")
#: a database of its own for each peer, so leftovers cannot meet the raw or ACP phases
DATABASES: Final = {"dramatiq": 1, "arq": 2}
DRAMATIQ_THREADS: Final = 8
#: arq's own default: jobs one worker runs concurrently
ARQ_MAX_JOBS: Final = 10
#: arq polls its queue every 0.5 s by default and sleeps out the rest of that
#: step after each batch it starts; 0.5 s would measure mostly the sleep
ARQ_POLL_DELAY: Final = 0.01

INSTALL_HINT: Final = {
    "dramatiq": "pip install 'dramatiq[redis]'",
    "arq": (
        "arq pins redis<6, which conflicts with the runtime's redis 8.x: install it in a "
        "separate virtualenv and pass --arq-python or set $ACP_BENCH_ARQ_PYTHON"
    ),
}


def with_db(url: str, db: int) -> str:
    """``url`` pointing at database ``db`` (``redis://h:p/N`` or ``unix://...?db=N``)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(db)
        return urlunsplit(parts._replace(query=urlencode(query)))
    return urlunsplit(parts._replace(path=f"/{db}"))


def run_peer(name: str, url: str, messages: int, *, timeout: float, python: str) -> dict[str, Any]:
    """Run one peer in a subprocess; its figures, or ``{"skipped": reason}``.

    ``subprocess.run`` kills the child when ``timeout`` expires, so a stuck
    worker costs at most ``timeout`` seconds.
    """
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
    # The child gets 80% of the budget so it can still report a partial run itself.
    child_timeout = f"{timeout * 0.8:g}"
    cmd = [python, __file__, name, with_db(url, DATABASES[name]), str(messages), child_timeout]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {timeout:g} s"}
    except OSError as exc:
        return {"skipped": f"cannot run {python}: {exc}"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return {"skipped": f"exited with code {proc.returncode}: {tail or 'no output'}"}
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


# --- children (run inside the subprocess) ------------------------------------------------


def _rates(n: int, t0: float, t1: float, t2: float) -> dict[str, Any]:
    """Enqueue, consume (worker start to last job) and end-to-end rates."""
    return {
        "msgs_per_s": round(n / (t2 - t0), 1),
        "enqueue_per_s": round(n / (t1 - t0), 1),
        "consume_per_s": round(n / (t2 - t1), 1),
    }


def dramatiq_child(url: str, n: int, timeout: float) -> dict[str, Any]:
    """Enqueue ``n`` no-op messages, then start one worker with 8 threads and time it to the last one.

    The worker runs in this process; its start-up is inside the consume time,
    as it would be for a queue that is started on demand.
    """
    try:
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker
    except ImportError as exc:
        return {"skipped": f"dramatiq not installed ({exc}); {INSTALL_HINT['dramatiq']}"}

    broker = RedisBroker(url=url)  # type: ignore[no-untyped-call]
    dramatiq.set_broker(broker)
    lock = threading.Lock()
    done = threading.Event()
    state = {"count": 0, "last": 0.0}

    @dramatiq.actor(queue_name="bench", max_retries=0)
    def noop(seq: int) -> None:
        with lock:
            state["count"] += 1
            if state["count"] == n:
                state["last"] = time.perf_counter()
                done.set()

    t0 = time.perf_counter()
    for seq in range(n):
        noop.send(seq)
    t1 = time.perf_counter()
    worker = dramatiq.Worker(broker, worker_threads=DRAMATIQ_THREADS)
    worker.start()
    finished = done.wait(timeout)
    worker.stop(timeout=5000)
    broker.close()
    if not finished:
        return {"skipped": f"only {state['count']} of {n} messages processed in {timeout:g} s"}
    return _rates(n, t0, t1, state["last"]) | {"threads": DRAMATIQ_THREADS}


def arq_child(url: str, n: int, timeout: float) -> dict[str, Any]:
    """Enqueue ``n`` no-op jobs, then run one burst-mode worker until the queue is empty."""
    try:
        import asyncio

        from arq import create_pool  # type: ignore[import-not-found,unused-ignore]
        from arq.connections import RedisSettings  # type: ignore[import-not-found,unused-ignore]
        from arq.worker import Worker, func  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        return {"skipped": f"arq not importable in {sys.executable} ({exc}); {INSTALL_HINT['arq']}"}

    async def noop(ctx: dict[str, Any], seq: int) -> None:
        return None

    async def run() -> dict[str, Any]:
        settings = RedisSettings.from_dsn(url)
        pool = await create_pool(settings)
        t0 = time.perf_counter()
        for seq in range(n):
            await pool.enqueue_job("noop", seq)
        t1 = time.perf_counter()
        worker = Worker(
            functions=[func(noop, name="noop")],
            redis_settings=settings,
            burst=True,
            handle_signals=False,
            max_jobs=ARQ_MAX_JOBS,
            poll_delay=ARQ_POLL_DELAY,
        )
        try:
            await asyncio.wait_for(worker.async_run(), timeout)
            t2 = time.perf_counter()
        finally:
            await worker.close()
            await pool.aclose()
        if worker.jobs_complete != n:
            return {"skipped": f"{worker.jobs_complete} of {n} jobs completed"}
        return _rates(n, t0, t1, t2) | {"max_jobs": ARQ_MAX_JOBS, "poll_delay": ARQ_POLL_DELAY}

    return asyncio.run(run())


def main(argv: list[str]) -> int:
    name, url, messages, timeout = argv[0], argv[1], int(argv[2]), float(argv[3])
    child = {"dramatiq": dramatiq_child, "arq": arq_child}[name]
    print(json.dumps(child(url, messages, timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
