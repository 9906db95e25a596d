"""Client-side pacing of Route 53 calls (chalkdr.ratelimit): under the account's API rate.

Route 53 throttles per account: five requests per second (re:Post, "How do I avoid Route 53 API
throttling errors?"), and one GetHealthCheckStatus per second in the current token-bucket
description (Route 53 Developer Guide, "Throttling of Route 53 API requests"). The pacer must keep
chalk-dr under both; these tests count what a burst of calls is allowed to do, measured in
tokens, not wall-clock upper bounds.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from chalkdr.clients import AwsClients
from chalkdr.ratelimit import ROUTE53_PACE
from chalkdr.ratelimit import Pacer
from chalkdr.ratelimit import TokenBucket


def test_a_bucket_lets_the_burst_through_then_waits_for_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3)
    assert [bucket.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    started = time.monotonic()
    waited = bucket.acquire()
    elapsed = time.monotonic() - started
    assert waited > 0 and elapsed >= waited * 0.9  # the fourth call really waited for a token


def test_concurrent_callers_never_exceed_the_rate() -> None:
    bucket = TokenBucket(rate=20.0, burst=1)
    stamps: list[float] = []
    lock = threading.Lock()

    def call() -> None:
        bucket.acquire()
        with lock:
            stamps.append(time.monotonic())

    threads = [threading.Thread(target=call) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps.sort()
    span = stamps[-1] - stamps[0]
    # 10 calls with one token saved: 9 had to wait for refills at 20/s.
    assert span >= 9 / 20.0 * 0.9


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1.0), (1.0, 0.5)])
def test_nonsense_buckets_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="rate > 0 and burst >= 1"):
        TokenBucket(rate, burst)


def test_the_pacer_charges_the_operation_and_the_account() -> None:
    pacer = Pacer((100.0, 2.0), {"GetHealthCheckStatus": (100.0, 1.0)})
    status = SimpleNamespace(name="GetHealthCheckStatus")
    pacer(model=status)
    pacer(model=SimpleNamespace(name="ListResourceRecordSets"))
    assert pacer.calls == 2 and pacer.waited_s == 0.0
    pacer(model=status)  # both the operation's token and the account's are spent: this one waits
    assert pacer.calls == 3 and pacer.waited_s > 0


def test_route53_pace_is_the_documented_limits() -> None:
    account, operations = ROUTE53_PACE
    assert account == (5.0, 5.0)
    assert operations["GetHealthCheckStatus"] == (1.0, 1.0)


def test_every_route53_client_is_paced_and_others_are_not(moto_inprocess: None) -> None:
    clients = AwsClients()
    clients.route53().list_hosted_zones()
    clients.route53().list_health_checks()
    clients.dynamodb("us-east-1").list_tables()
    assert clients.route53_pacer.calls == 2
