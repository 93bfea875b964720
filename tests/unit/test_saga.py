"""The saga helper on its own: undo in reverse, retry each undo until it succeeds."""

from __future__ import annotations

import asyncio

import pytest

from widget_store.saga import Saga


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def undo(self, name: str, failures: int = 0):  # type: ignore[no-untyped-def]
        remaining = [failures]

        async def run(reason: str) -> None:
            self.calls.append(f"{name}({reason})")
            if remaining[0] > 0:
                remaining[0] -= 1
                raise RuntimeError(f"{name} is down")

        return run


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def test_rollback_runs_compensations_newest_first_with_the_reason() -> None:
    log = Recorder()
    saga = Saga(sleep=log.sleep)
    saga.on_rollback("CancelOrder", log.undo("cancel"))
    saga.on_rollback("ReleaseReservation", log.undo("release"))
    saga.on_rollback("RefundPayment", log.undo("refund"))

    assert saga.pending == ["RefundPayment", "ReleaseReservation", "CancelOrder"]
    run(saga.rollback("shipping failed"))

    assert log.calls == [
        "refund(shipping failed)",
        "release(shipping failed)",
        "cancel(shipping failed)",
    ]
    assert saga.pending == []


def test_an_undo_registered_with_arguments_gets_them_before_the_reason() -> None:
    calls: list[tuple[object, ...]] = []

    async def release(checkout_key: str, line: int, reason: str) -> None:
        calls.append((checkout_key, line, reason))

    saga = Saga()
    saga.on_rollback("ReleaseReservation", release, "key-1", 2)
    run(saga.rollback("payment declined"))

    assert calls == [("key-1", 2, "payment declined")]


def test_a_failing_compensation_is_retried_with_backoff_until_it_succeeds() -> None:
    log = Recorder()
    saga = Saga(first_delay_s=0.5, max_delay_s=2.0, sleep=log.sleep)
    saga.on_rollback("CancelOrder", log.undo("cancel"))
    saga.on_rollback("RefundPayment", log.undo("refund", failures=4))

    run(saga.rollback("payment declined"))

    assert log.calls.count("refund(payment declined)") == 5
    assert log.sleeps == [0.5, 1.0, 2.0, 2.0]
    assert log.calls[-1] == "cancel(payment declined)", "later undos still run"


def test_rollback_with_nothing_registered_does_nothing() -> None:
    log = Recorder()
    run(Saga(sleep=log.sleep).rollback("out of stock"))
    assert log.calls == []


def test_a_second_rollback_does_not_undo_twice() -> None:
    log = Recorder()
    saga = Saga(sleep=log.sleep)
    saga.on_rollback("CancelOrder", log.undo("cancel"))
    run(saga.rollback("x"))
    run(saga.rollback("x"))
    assert log.calls == ["cancel(x)"]


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_are_not_swallowed(error: type[BaseException]) -> None:
    async def interrupted(reason: str) -> None:
        raise error()

    saga = Saga(sleep=Recorder().sleep)
    saga.on_rollback("CancelOrder", interrupted)
    with pytest.raises(error):
        run(saga.rollback("x"))


class FakeDeadLetters:
    def __init__(self, log: Recorder) -> None:
        self.log = log

    async def park(self, compensation: str, error: str, attempts: int) -> None:
        self.log.calls.append(f"park {compensation} after {attempts}: {error}")

    async def resolved(self, compensation: str) -> None:
        self.log.calls.append(f"resolved {compensation}")


def test_a_compensation_that_keeps_failing_is_parked_then_retried_until_it_succeeds() -> None:
    log = Recorder()
    saga = Saga(park_after=3, dead_letters=FakeDeadLetters(log), sleep=log.sleep)
    saga.on_rollback("CancelOrder", log.undo("cancel"))
    saga.on_rollback("RefundPayment", log.undo("refund", failures=7))

    run(saga.rollback("shipping failed"))

    parks = [call for call in log.calls if call.startswith("park")]
    assert parks == [
        "park RefundPayment after 3: RuntimeError('refund is down')",
        "park RefundPayment after 6: RuntimeError('refund is down')",
    ]
    assert log.calls.count("refund(shipping failed)") == 8
    assert log.calls[-2:] == ["resolved RefundPayment", "cancel(shipping failed)"]
    assert len(log.sleeps) == 5, "no sleep right after parking: the park itself waited"


def test_a_compensation_that_never_parked_is_not_reported_resolved() -> None:
    log = Recorder()
    saga = Saga(park_after=3, dead_letters=FakeDeadLetters(log), sleep=log.sleep)
    saga.on_rollback("RefundPayment", log.undo("refund", failures=1))
    run(saga.rollback("x"))
    assert not [call for call in log.calls if call.startswith(("park", "resolved"))]
