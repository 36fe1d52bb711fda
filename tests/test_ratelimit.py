"""Token buckets and the log budget, on a clock the test turns."""

from __future__ import annotations

import pytest

from pxeserver.ratelimit import KeyedBuckets, LogBudget, TokenBucket, left_out


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_gives_its_burst_then_its_rate() -> None:
    clock = Clock()
    b = TokenBucket(10, 20, clock=clock)
    assert [b.take() for _ in range(21)] == [True] * 20 + [False]
    clock.now += 0.25  # 2.5 tokens
    assert [b.take() for _ in range(3)] == [True, True, False]
    clock.now += 1000  # never more than the burst saved up
    assert sum(b.take() for _ in range(50)) == 20


def test_keyed_buckets_are_per_key_and_bounded() -> None:
    clock = Clock()
    k = KeyedBuckets(1, 2, max_keys=3, clock=clock)
    assert [k.take("a") for _ in range(3)] == [True, True, False]
    assert k.take("b") and k.take("b") and not k.take("b")  # "a" does not spend "b"'s
    for key in ("c", "d", "e"):
        k.take(key)
    assert len(k) == 3  # "a" and "b" were pushed out: memory stays bounded
    assert k.take("a")  # a key pushed out starts again full


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(0, 5)
    with pytest.raises(ValueError, match="burst >= 1"):
        KeyedBuckets(1, 0.5)


def test_the_log_budget_counts_what_it_left_out() -> None:
    clock = Clock()
    budget = LogBudget(1, 2, clock=clock)
    assert [budget.allow() for _ in range(5)] == [(True, 0), (True, 0)] + [(False, 0)] * 3
    clock.now += 1
    assert budget.allow() == (True, 3)
    assert left_out(3) == " (3 similar lines left out: too many a second)" and left_out(0) == ""
