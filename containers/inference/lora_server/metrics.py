"""Per-request CloudWatch metrics as embedded-metric-format (EMF) log lines.

SageMaker sends the container's stdout to CloudWatch Logs, which turns each EMF line into metrics:
no CloudWatch API call, no permission and no latency on the request path. Values are kept per
thread (one request runs on one thread), so concurrent requests never mix their metrics.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

# The units this server records; CloudWatch accepts these names (and others) in an EMF Metrics entry.
UNITS = ("Count", "Milliseconds", "Bytes")
# An EMF metric holds at most 100 values in one line.
MAX_VALUES = 100


class Metrics:
    """`record` during a request, `flush` at its end: one EMF JSON line with every value recorded."""

    def __init__(self, namespace: str, dimensions: dict[str, str], emit: Callable[[str], None] = print) -> None:
        if not namespace:
            raise ValueError("a metrics namespace is required")
        self.namespace = namespace
        self.dimensions = dict(dimensions)
        self._emit = emit
        self._local = threading.local()

    def _values(self) -> dict[str, tuple[str, list[float]]]:
        values = getattr(self._local, "values", None)
        if values is None:
            values = self._local.values = {}
        return values

    def record(self, name: str, value: float, unit: str) -> None:
        """Adds a value of metric `name` to this thread's request; repeated names keep every value."""
        if unit not in UNITS:
            raise ValueError(f"metric {name}: unit must be one of {', '.join(UNITS)}, got {unit!r}")
        if name in self.dimensions or name == "_aws":
            raise ValueError(f"metric {name}: the name is taken by a dimension or by EMF's metadata")
        values = self._values()
        recorded_unit, series = values.setdefault(name, (unit, []))
        if recorded_unit != unit:
            raise ValueError(f"metric {name}: recorded in {recorded_unit}, then in {unit}")
        if len(series) < MAX_VALUES:
            series.append(float(value))

    def discard(self) -> None:
        """Forgets this thread's values without writing them (a request whose metrics must not count)."""
        self._local.values = {}

    def flush(self) -> None:
        """Writes this thread's values as one EMF line and clears them; nothing when none were recorded."""
        values = self._values()
        self._local.values = {}
        if not values:
            return
        document: dict[str, object] = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [list(self.dimensions)],
                        "Metrics": [{"Name": name, "Unit": unit} for name, (unit, _) in values.items()],
                    }
                ],
            },
            **self.dimensions,
        }
        for name, (_, series) in values.items():
            document[name] = series[0] if len(series) == 1 else series
        self._emit(json.dumps(document, separators=(",", ":")))
