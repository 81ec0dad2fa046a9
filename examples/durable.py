"""Durable commands: stored in SQLite before submit returns, requeued after a crash.

Run it twice: ``python examples/durable.py /tmp/lanes-demo.db``. The first run "crashes"
with commands unfinished; the second run finds them in the database and finishes them.
"""

from __future__ import annotations

import sys

import attrs
import trio

import lanes


@lanes.command(name="send-email")
@attrs.define
class SendEmail:
    to: str
    subject: str

    async def execute(self) -> str:
        await trio.sleep(1)  # stands in for an SMTP call
        return f"sent {self.subject!r} to {self.to}"


LANES = (lanes.LaneConfig("email", 0, max_concurrency=2, retry=lanes.RetryPolicy.exponential(3)),)


async def main(path: str = "lanes-demo.db") -> None:
    async with lanes.open_lane_system(LANES, storage=path, commands=[SendEmail]) as system:
        if system.recovered:
            print(f"recovered {len(system.recovered)} unfinished command(s) from {path}")
            for handle in system.recovered:
                print(" ", await handle.result())
            return
        for n in range(5):
            # Returns once the command is on disk; the key makes a resubmit harmless.
            await system.submit("email", SendEmail(f"user{n}@example.org", "hello"), key=f"hi-{n}")
        print("submitted 5 emails; crashing after 1.5 s (2 sent, 2 running, 1 pending)")
        await trio.sleep(1.5)
        raise SystemExit(1)  # leaving by an exception cancels at once: nothing is deleted


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "lanes-demo.db")
