"""Alert metrics and scope kinds other apps add to monitoring, so monitoring never imports them.

Monitoring registers its own job metrics here (``monitoring.alerts``); the batches app registers its
batch metrics and the "job type" and "company" scopes from its ``AppConfig.ready()``. Rule validation
(admin and API) and evaluation both ask this registry, so a metric is known everywhere or nowhere.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

# How a measured value is compared with the rule's threshold.
ABOVE = "above"  # fires when value > threshold
BELOW = "below"  # fires when value < threshold
AT_LEAST = "at_least"  # fires when value >= threshold
AT_MOST = "at_most"  # fires when value <= threshold
COMPARISONS = (ABOVE, BELOW, AT_LEAST, AT_MOST)


@dataclass(frozen=True)
class Scope:
    """What a rule looks at: ``kind`` ("all", "queue", ...) and, except for "all", a value."""

    kind: str
    value: str = ""

    @property
    def key(self) -> str:
        """The deduplication key of the scope (one open alert per rule and key)."""
        return self.kind if self.kind == "all" else f"{self.kind}:{self.value}"

    def __str__(self) -> str:
        return "everything" if self.kind == "all" else f"{self.kind} {self.value}"


@dataclass
class Observation:
    """One measurement: ``value`` (None: nothing to measure, the condition is clear) and context.

    ``known=False`` means the measurement could not be taken (broker down): the alert state is left as
    it is rather than resolved or fired on a guess.
    """

    value: float | None
    known: bool = True
    details: dict[str, Any] = field(default_factory=dict)
    # How many jobs (or requests) the value was computed from, for metrics that are rates or averages
    # (``Metric.sampled``): a rule's ``min_samples`` keeps one failure out of two jobs from paging anyone.
    samples: int | None = None


class Context:
    """Per-evaluation memo so rules sharing a window or a worker report compute it once."""

    def __init__(self) -> None:
        self.memo: dict[Any, Any] = {}

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]


@dataclass(frozen=True)
class Check:
    """What one rule asks of its metric: the scope, the window ending ``now``, the threshold."""

    scope: Scope
    window: timedelta
    threshold: float
    now: datetime
    context: Context

    @property
    def since(self) -> datetime:
        return self.now - self.window


Measure = Callable[[Check], Observation]


@dataclass(frozen=True)
class Metric:
    """An alert metric: how to measure it, how to compare it, and which scopes it accepts."""

    name: str
    label: str
    comparison: str
    unit: str
    scopes: tuple[str, ...]
    measure: Measure
    # Upper bound of a sensible threshold (percentages stop at 100); None: unbounded.
    max_threshold: float | None = None
    # The metric reads a time window (False: the window is ignored, e.g. queue depth right now).
    uses_window: bool = True
    # The value is a rate or an average over samples its observations count (rules may ask for a minimum).
    sampled: bool = False

    def breached(self, value: float, threshold: float) -> bool:
        return {ABOVE: value > threshold, BELOW: value < threshold, AT_LEAST: value >= threshold,
                AT_MOST: value <= threshold}[self.comparison]


@dataclass(frozen=True)
class ScopeKind:
    """A kind of scope; ``validate(value)`` returns an error message or None."""

    name: str
    label: str
    validate: Callable[[str], str | None] | None = None


_lock = threading.Lock()
_metrics: dict[str, Metric] = {}
_scopes: dict[str, ScopeKind] = {}


def register_metric(metric: Metric) -> None:
    """Add (or replace, on a repeated ``ready()``) an alert metric."""
    if metric.comparison not in COMPARISONS:
        raise ValueError(f"comparison must be one of {COMPARISONS}, not {metric.comparison!r}")
    with _lock:
        _metrics[metric.name] = metric


def register_scope(kind: ScopeKind) -> None:
    """Add (or replace) a scope kind."""
    with _lock:
        _scopes[kind.name] = kind


def metrics() -> dict[str, Metric]:
    """Every registered metric by name, in registration order."""
    with _lock:
        return dict(_metrics)


def scope_kinds() -> dict[str, ScopeKind]:
    """Every registered scope kind by name, in registration order."""
    with _lock:
        return dict(_scopes)


def get_metric(name: str) -> Metric | None:
    with _lock:
        return _metrics.get(name)
