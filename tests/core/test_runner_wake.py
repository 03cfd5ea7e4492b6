"""The runner wake-up: a launch makes the embedded runner poll at once (real sockets, real event loop)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core import runner_wake


def test_wake_makes_the_listener_poll_and_bursts_coalesce(tmp_path: Path) -> None:
    polls: list[float] = []

    async def scenario() -> tuple[bool, bool]:
        gate = asyncio.Event()

        async def poll() -> None:
            polls.append(asyncio.get_running_loop().time())
            await gate.wait()  # a slow poll: wake-ups meanwhile must give exactly one more poll

        async with runner_wake.listening(tmp_path, poll) as listening:
            assert listening
            sent = runner_wake.wake(tmp_path)
            for _ in range(100):
                await asyncio.sleep(0.01)
                if polls:
                    break
            for _ in range(5):
                runner_wake.wake(tmp_path)
            await asyncio.sleep(0.1)
            gate.set()
            await asyncio.sleep(0.1)
        return sent, runner_wake.wake(tmp_path)

    sent, after_close = asyncio.run(scenario())
    assert sent and len(polls) == 2
    assert after_close is False  # nobody listens any more: the launch just goes on


def test_wake_targets_only_its_own_var_dir(tmp_path: Path) -> None:
    polls: list[str] = []

    async def scenario() -> None:
        async def poll() -> None:
            polls.append("polled")

        async with runner_wake.listening(tmp_path / "a", poll):
            assert runner_wake.wake(tmp_path / "b") is False
            await asyncio.sleep(0.1)
            # a second runner on the same var dir cannot take the socket: it only polls
            async with runner_wake.listening(tmp_path / "a", poll) as second:
                assert second is False

    asyncio.run(scenario())
    assert polls == []


def test_a_failing_poll_does_not_stop_the_listener(tmp_path: Path) -> None:
    calls: list[int] = []

    async def scenario() -> None:
        async def poll() -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("Prefect API unreachable")

        async with runner_wake.listening(tmp_path, poll):
            for _ in range(2):
                runner_wake.wake(tmp_path)
                await asyncio.sleep(0.2)

    asyncio.run(scenario())
    assert len(calls) == 2
