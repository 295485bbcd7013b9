"""How soon the replica pool follows replicas that come, go, fail `/ready` or die mid-request.

    ./run.sh bench bench_discovery [--runs 3]

Starts replica servers (test/integration/replica_app.py, built by the project's service factory)
on 127.0.0.2, .3, ... at one port, behind one name whose DNS answer this script changes through
the pool's resolver hook, as a Kubernetes headless Service's answer changes. One client sends a
request every 50 ms, as a gateway sends chunks, and the script prints, per event, the seconds
from the change until the pool acted on it (min / median / max of the runs):
- added: a new replica is listed -> the first request it answers;
- removed: a replica is dropped from DNS -> the pool no longer holds it;
- not ready: a replica's /ready turns 503 -> the pool stops giving it work;
- ready again: its /ready turns 200 -> the first request it answers;
- died: a 1 s request in flight on a replica killed with -9 after 0.3 s -> the extra time the
  request took, retried on another replica (its own 1 s there not counted).
The pool looks every `REFRESH_EVERY_S` (common/replicas.py), so each figure is bounded by it
plus a probe.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from common.replicas import REFRESH_EVERY_S, ReplicaPool  # noqa: E402
from test.replicautil import NAME, Dns, Replicas, shared_free_port  # noqa: E402

STEADY = ["127.0.0.2", "127.0.0.3"]
SPARE = "127.0.0.4"
LIMIT_S = 30.0


async def until(condition) -> float:
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start > LIMIT_S:
            raise TimeoutError(f"nothing changed within {LIMIT_S:.0f}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def one_run(servers: Replicas, figures: dict[str, list[float]]) -> None:
    dns = Dns(*STEADY)
    async with httpx.AsyncClient(timeout=30) as client:
        pool = ReplicaPool("predictor", [f"http://{NAME}:{servers.port}"], client, 2, resolve=dns)

        async def answered_by(address: str) -> bool:
            response = await pool.request("POST", "/work", content=b"x")
            return response.json()["replica"] == address

        await pool.start()
        await asyncio.to_thread(servers.start, SPARE)
        dns.addresses.append(SPARE)
        figures["added"].append(await until(lambda: answered_by(SPARE)))

        dns.addresses.remove(SPARE)
        spare_url = servers.url(SPARE)

        async def dropped() -> bool:
            await pool.request("POST", "/work", content=b"x")
            return spare_url not in pool.replicas

        figures["removed"].append(await until(dropped))
        servers.kill(SPARE)

        target = STEADY[1]
        await client.put(servers.url(target) + "/readiness", params={"ready": "false"})

        async def not_ready() -> bool:
            await pool.request("POST", "/work", content=b"x")
            return pool.replicas[servers.url(target)].ready is False

        figures["not ready"].append(await until(not_ready))
        await client.put(servers.url(target) + "/readiness", params={"ready": "true"})
        figures["ready again"].append(await until(lambda: answered_by(target)))

        await asyncio.to_thread(servers.start, SPARE)
        dns.addresses = [STEADY[0], SPARE]
        await until(lambda: answered_by(SPARE))
        # one request lands on each; the one on SPARE is cut off by the kill
        start = time.monotonic()
        calls = [pool.request("POST", "/work?delay_s=1", content=b"x") for _ in range(2)]
        tasks = [asyncio.create_task(c) for c in calls]
        await asyncio.sleep(0.3)
        servers.kill(SPARE)
        await asyncio.gather(*tasks)
        figures["died"].append(time.monotonic() - start - 0.3 - 1.0)
        await pool.aclose()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {
        k: [] for k in ("added", "removed", "not ready", "ready again", "died")
    }
    with tempfile.TemporaryDirectory() as logs:
        servers = Replicas(shared_free_port([*STEADY, SPARE]), Path(logs))
        try:
            for address in STEADY:
                servers.start(address)
            for _ in range(args.runs):
                asyncio.run(one_run(servers, figures))
        finally:
            servers.stop_all()
    print(f"REFRESH_EVERY_S = {REFRESH_EVERY_S} s; {args.runs} runs; seconds min / median / max")
    for event, values in figures.items():
        print(
            f"  {event:12s} {min(values):5.2f} / {statistics.median(values):5.2f}"
            f" / {max(values):5.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
