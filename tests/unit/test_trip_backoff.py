"""The trip's legs back off as the benchmark's Temporal side does, so that the benchmark
compares engines rather than backoffs."""

from __future__ import annotations

from bench.temporal_trip.shared import TripPolicy
from widget_store.domain import TripRequest
from widget_store.trip_steps import RETRY_FIRST_S, RETRY_MAX_S, booking_key, retry_delay_s


def test_the_store_backs_off_like_the_temporal_side_of_the_benchmark() -> None:
    policy = TripPolicy()
    assert (policy.retry_initial_s, policy.retry_max_s) == (RETRY_FIRST_S, RETRY_MAX_S)


def test_the_wait_doubles_after_each_failure_up_to_a_second() -> None:
    assert [retry_delay_s(n) for n in range(1, 10)] == [
        0.01,
        0.02,
        0.04,
        0.08,
        0.16,
        0.32,
        0.64,
        1.0,
        1.0,
    ]


def test_a_leg_is_booked_and_cancelled_under_one_key_per_trip() -> None:
    assert booking_key("trip-1", "hotel") == "trip-1:hotel"
    assert booking_key("trip-1", "hotel") != booking_key("trip-1", "car")


def test_a_trip_fingerprint_tells_a_retry_from_another_trip() -> None:
    trip = TripRequest("u", "car", "hotel", "flight", 3)
    assert trip.fingerprint() == TripRequest("u", "car", "hotel", "flight", 3).fingerprint()
    assert trip.fingerprint() != TripRequest("u", "car", "hotel", "flight", 4).fingerprint()
    assert trip.item("hotel") == "hotel"
