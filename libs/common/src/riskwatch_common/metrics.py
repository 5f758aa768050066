"""Prometheus metric helpers.

Collectors are got-or-created by name, so a service built twice in one process (tests run
several services side by side) shares its metrics instead of failing on re-registration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.registry import Collector

C = TypeVar("C", Counter, Gauge, Histogram)

_created: dict[str, Collector] = {}

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _get_or_create(kind: type[C], name: str, doc: str, labels: Sequence[str], **kw: object) -> C:
    existing = _created.get(name)
    if existing is not None:
        if not isinstance(existing, kind):
            raise TypeError(f"metric {name} already exists as {type(existing).__name__}")
        return existing
    metric = kind(name, doc, labelnames=tuple(labels), registry=REGISTRY, **kw)  # type: ignore[arg-type]
    _created[name] = metric
    return metric


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    """A counter; ``name`` is the full name with the service prefix and ``_total``."""
    return _get_or_create(Counter, name, doc, labels)


def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
    return _get_or_create(Gauge, name, doc, labels)


def histogram(
    name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
) -> Histogram:
    return _get_or_create(Histogram, name, doc, labels, buckets=tuple(buckets))


def metric_prefix(service: str) -> str:
    """'risk-processor' -> 'risk_processor': metric names allow no hyphen."""
    return service.replace("-", "_")
