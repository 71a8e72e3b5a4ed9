"""Metrics: one CloudWatch embedded-metric-format line per request, per thread."""

from __future__ import annotations

import json
import threading

import pytest

from lora_server.metrics import Metrics


def metrics_with_lines() -> tuple[Metrics, list[dict]]:
    lines: list[dict] = []
    return Metrics("Test/Serving", {"ModelType": "sd15"}, emit=lambda line: lines.append(json.loads(line))), lines


def test_flush_writes_one_emf_document_with_every_value() -> None:
    metrics, lines = metrics_with_lines()
    metrics.record("LoraMiss", 1, "Count")
    metrics.record("LoraFetchMs", 12.5, "Milliseconds")
    metrics.record("LoraFetchMs", 30, "Milliseconds")
    metrics.flush()
    assert len(lines) == 1
    (line,) = lines
    directive = line["_aws"]["CloudWatchMetrics"]
    assert directive == [
        {
            "Namespace": "Test/Serving",
            "Dimensions": [["ModelType"]],
            "Metrics": [{"Name": "LoraMiss", "Unit": "Count"}, {"Name": "LoraFetchMs", "Unit": "Milliseconds"}],
        }
    ]
    assert isinstance(line["_aws"]["Timestamp"], int)
    assert line["ModelType"] == "sd15" and line["LoraMiss"] == 1 and line["LoraFetchMs"] == [12.5, 30]


def test_flush_clears_and_writes_nothing_when_empty() -> None:
    metrics, lines = metrics_with_lines()
    metrics.flush()
    assert lines == []
    metrics.record("GenerationMs", 5, "Milliseconds")
    metrics.flush()
    metrics.flush()
    assert len(lines) == 1


def test_discard_forgets_the_values() -> None:
    metrics, lines = metrics_with_lines()
    metrics.record("LoraMiss", 1, "Count")
    metrics.discard()
    metrics.flush()
    assert lines == []


def test_threads_keep_their_own_values() -> None:
    metrics, lines = metrics_with_lines()
    metrics.record("LoraHitDisk", 1, "Count")
    other = threading.Thread(target=lambda: (metrics.record("LoraMiss", 1, "Count"), metrics.flush()))
    other.start()
    other.join()
    assert [sorted(k for k in line if k.startswith("Lora")) for line in lines] == [["LoraMiss"]]
    metrics.flush()
    assert sorted(k for k in lines[1] if k.startswith("Lora")) == ["LoraHitDisk"]


@pytest.mark.parametrize(
    ("name", "unit", "message"),
    [("X", "Seconds", "unit must be one of"), ("ModelType", "Count", "taken by a dimension"), ("_aws", "Count", "taken")],
)
def test_bad_names_and_units_are_refused(name: str, unit: str, message: str) -> None:
    metrics, _ = metrics_with_lines()
    with pytest.raises(ValueError, match=message):
        metrics.record(name, 1, unit)


def test_one_name_keeps_one_unit() -> None:
    metrics, _ = metrics_with_lines()
    metrics.record("LoraFetchMs", 1, "Milliseconds")
    with pytest.raises(ValueError, match="recorded in Milliseconds, then in Count"):
        metrics.record("LoraFetchMs", 1, "Count")
