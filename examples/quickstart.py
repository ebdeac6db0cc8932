"""Quick start: goals through the real client to the built-in fake DataFast server.

Run it with ``make demo`` (or ``python examples/quickstart.py``). It needs no key and no
network: the fake server listens on 127.0.0.1 and fails some requests on purpose.
"""

from __future__ import annotations

import asyncio
import time

from datafast_async import DataFast, RetryPolicy
from datafast_async.testing import FakeDataFast


async def main(goals: int = 2_000) -> None:
    async with FakeDataFast(fail_rate=0.1, seed=7) as fake:
        failed: list[str] = []
        client = DataFast(
            fake.api_key,
            base_url=fake.base_url,
            retry=RetryPolicy(initial_delay=0.01, max_delay=0.1),
            on_failure=lambda goal, error: failed.append(f"{goal.name}: {error}"),
        )
        started = time.monotonic()
        async with client:
            for i in range(goals):
                client.track_nowait(
                    "a3ab2331-989f-4cfa-91c6-2461c9e3c6bd",
                    "Newsletter Signup" if i % 2 else "checkout:paid",
                    metadata={"plan": "pro", "seq": i},
                )
        stats = client.stats()
        elapsed = time.monotonic() - started
    print(f"sent {goals} goals in {elapsed:.2f} s ({goals / elapsed:,.0f}/s)")
    print(f"delivered {stats.delivered}, failed {stats.failed}, retries {stats.retries}")
    print(f"the fake server recorded {len(fake.goals)} goals")
    for line in failed[:5]:
        print("failed:", line)
    assert stats.delivered + stats.failed == goals, "a goal went missing"


if __name__ == "__main__":
    asyncio.run(main())
