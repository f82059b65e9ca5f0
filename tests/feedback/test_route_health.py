import time

import pytest

from llmloop.feedback.db import create_db_engine
from llmloop.feedback.route_health import (
    Breach,
    VersionHealth,
    breaches,
    stable_health,
    version_health,
    window_start,
)
from llmloop.feedback.routes import Canary, Route, RouteStore, Thresholds, Version
from tests.feedback.route_log import log_requests


@pytest.fixture
def db(db_url):
    engine = create_db_engine(db_url)
    RouteStore(engine).migrate()
    yield engine
    engine.dispose()


def test_version_health_counts_each_version_of_the_route_in_the_window(db):
    now = time.time()
    log_requests(db, "support", "support@1", 6, latency_s=0.2)
    log_requests(db, "support", "support@1", 2, finish_reason="error", latency_s=0.4)
    log_requests(db, "support", "support@2", 3, latency_s=1.0)
    log_requests(db, "support", "support@2", 1, finish_reason="abort", latency_s=1.0)
    log_requests(db, "support", "support@2", 2, finish_reason="content_filter", latency_s=3.0)
    # refused on input: the version never generated, so it is not the version's refusal
    log_requests(db, "support", "support@2", 1, finish_reason="content_filter", completion_tokens=0)
    log_requests(db, "support", "support@2", 2, rating=-1, latency_s=1.0)
    log_requests(db, "support", "support@2", 1, rating=1, latency_s=1.0)
    log_requests(db, "other", "support@2", 5, finish_reason="error")  # another route
    log_requests(db, "support", "support@2", 5, finish_reason="error", created=now - 3600)

    health = version_health(db, "support", since=now - 60)

    assert set(health) == {"support@1", "support@2"}
    assert health["support@1"] == VersionHealth(requests=8, errors=2, latency_p50_s=0.2)
    canary = health["support@2"]
    assert (canary.requests, canary.errors, canary.refusals) == (10, 1, 2)
    assert (canary.negative_feedback, canary.rated) == (2, 3)
    assert canary.error_rate == pytest.approx(0.1)
    assert canary.refusal_rate == pytest.approx(0.2)
    assert canary.negative_feedback_rate == pytest.approx(0.2)
    assert canary.latency_p50_s == pytest.approx(1.0)


def test_version_health_of_a_route_without_requests_is_empty(db):
    assert version_health(db, "support", since=0) == {}


def test_stable_health_adds_up_all_but_the_canary_with_the_busiest_versions_latency():
    route = Route(
        "support",
        (Version("support@1", 90), Version("support@3", 10)),
        canary=Canary("support@4", 5, started=0),
    )
    health = {
        "support@1": VersionHealth(requests=90, errors=1, latency_p50_s=0.5),
        "support@3": VersionHealth(requests=10, errors=3, latency_p50_s=9.0),
        "support@4": VersionHealth(requests=7, errors=7, latency_p50_s=1.0),
    }
    stable = stable_health(route, health)
    assert (stable.requests, stable.errors, stable.latency_p50_s) == (100, 4, 0.5)
    assert stable_health(route, {"support@4": health["support@4"]}) == VersionHealth()


def canary(**thresholds) -> Canary:
    return Canary("support@2", 10, started=0, thresholds=Thresholds(**thresholds))


STABLE = VersionHealth(requests=1000, latency_p50_s=1.0)


def test_breaches_waits_for_min_requests():
    sick = VersionHealth(requests=49, errors=49, refusals=49, negative_feedback=49)
    assert breaches(canary(min_requests=50), sick, STABLE) == []
    sick = VersionHealth(requests=50, errors=50)
    assert [b.threshold for b in breaches(canary(min_requests=50), sick, STABLE)] == ["error_rate"]


@pytest.mark.parametrize(
    ("health", "threshold", "message"),
    [
        (VersionHealth(requests=100, errors=6), "error_rate", "error rate 0.060 > 0.05"),
        (VersionHealth(requests=100, refusals=11), "refusal_rate", "refusal rate 0.110 > 0.1"),
        (
            VersionHealth(requests=100, negative_feedback=21),
            "negative_feedback_rate",
            "negative feedback rate 0.210 > 0.2",
        ),
        (
            VersionHealth(requests=100, latency_p50_s=2.5),
            "latency_ratio",
            "latency ratio 2.50 > 2 (p50 vs stable)",
        ),
    ],
)
def test_each_threshold_names_itself(health, threshold, message):
    [breach] = breaches(canary(), health, STABLE)
    assert breach.threshold == threshold
    assert breach.message.startswith(message)


def test_rates_at_their_limits_are_no_breach():
    at_limits = VersionHealth(
        requests=100, errors=5, refusals=10, negative_feedback=20, latency_p50_s=2.0
    )
    assert breaches(canary(), at_limits, STABLE) == []
    # no stable latency to compare with: the ratio is not judged
    assert breaches(canary(), VersionHealth(requests=100, latency_p50_s=60), VersionHealth()) == []


def test_every_breached_threshold_is_reported_in_order():
    sick = VersionHealth(requests=100, errors=50, negative_feedback=50, latency_p50_s=5.0)
    assert breaches(canary(), sick, STABLE) == [
        Breach("error_rate", "error rate 0.500 > 0.05 over 100 requests"),
        Breach("negative_feedback_rate", "negative feedback rate 0.500 > 0.2 over 100 requests"),
        Breach("latency_ratio", "latency ratio 5.00 > 2 (p50 vs stable)"),
    ]


def test_window_starts_at_the_canary_start_or_window_s_ago():
    assert window_start(Canary("a@1", 5, started=1000.0), now=1500.0) == 1000.0
    assert window_start(canary(window_s=300), now=10_000.0) == 9_700.0
