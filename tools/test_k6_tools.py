"""Tests of tools/k6_thresholds.py and tools/k6_otlp.py: `python3 -m unittest discover -s tools`."""

import json
import pathlib
import tempfile
import unittest

import k6_otlp
import k6_thresholds


class Thresholds(unittest.TestCase):
    DECLARED = {"http_req_failed": ["rate<0.01"], "http_req_duration{name:POST /orders}": ["p(95)<500", "p(99)<1000"]}

    def summary(self, **results):
        return {"metrics": {metric: {"thresholds": value} for metric, value in results.items()}}

    def test_every_declared_threshold_evaluated_and_passed_is_ok(self):
        summary = self.summary(**{"http_req_failed": {"rate<0.01": False},
                                  "http_req_duration{name:POST /orders}": {"p(95)<500": False, "p(99)<1000": False}})
        lines, problems = k6_thresholds.evaluate(self.DECLARED, summary)
        self.assertEqual(problems, [])
        self.assertEqual(len(lines), 3)

    def test_a_threshold_missing_from_the_summary_or_crossed_is_a_problem(self):
        summary = self.summary(**{"http_req_failed": {"rate<0.01": True},
                                  "http_req_duration{name:POST /orders}": {"p(95)<500": False}})
        _, problems = k6_thresholds.evaluate(self.DECLARED, summary)
        self.assertEqual(problems, ["http_req_duration{name:POST /orders}: p(99)<1000 was not evaluated",
                                    "http_req_failed: rate<0.01 was crossed"])

    def test_a_scenario_without_thresholds_fails(self):
        _, problems = k6_thresholds.evaluate({}, {"metrics": {}})
        self.assertEqual(problems, ["the scenario declares no threshold"])

    def test_abort_on_fail_thresholds_are_read_by_their_expression(self):
        declared = {"checks": [{"threshold": "rate>0.99", "abortOnFail": True}]}
        _, problems = k6_thresholds.evaluate(declared, self.summary(checks={"rate>0.99": False}))
        self.assertEqual(problems, [])


def message(*fields: tuple[int, bytes | int]) -> bytes:
    """A protobuf message of length-delimited (bytes) and varint (int) fields."""
    out = b""
    for number, value in fields:
        if isinstance(value, int):
            out += varint(number << 3) + varint(value)
        else:
            out += varint(number << 3 | 2) + varint(len(value)) + value
    return out


def varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def attribute(key: str) -> bytes:
    return message((1, key.encode()), (2, message((1, b"v"))))


class Otlp(unittest.TestCase):
    def request(self) -> bytes:
        counter = message((1, b"k6_http_reqs"), (7, message((1, message((7, attribute("status")))), (2, 2), (3, 1))))
        rate_total = message((1, b"k6_checks.total"), (7, message((1, message((7, attribute("check")))), (3, 1))))
        trend = message((1, b"k6_http_req_duration"), (3, b"ms"),
                        (9, message((1, message((9, attribute("name")), (9, attribute("status")))))))
        gauge = message((1, b"k6_vus"), (5, message((1, message()))))
        scope = message((2, counter), (2, rate_total), (2, trend), (2, gauge))
        return message((1, message((2, scope))))

    def received(self) -> str:
        path = pathlib.Path(tempfile.mkdtemp()) / "otlp.json"
        path.write_text(json.dumps(k6_otlp.decode_request(self.request())))
        return str(path)

    def test_a_request_decodes_to_names_units_kinds_and_attributes(self):
        metrics = {m["name"]: m for m in k6_otlp.decode_request(self.request())}
        self.assertEqual(metrics["k6_http_reqs"], {"name": "k6_http_reqs", "unit": "", "kind": "sum",
                                                   "monotonic": True, "attributes": ["status"]})
        self.assertEqual(metrics["k6_http_req_duration"]["unit"], "ms")
        self.assertEqual(metrics["k6_http_req_duration"]["attributes"], ["name", "status"])
        self.assertEqual(metrics["k6_vus"]["kind"], "gauge")

    def test_names_follow_the_collectors_prometheus_exporter(self):
        names = k6_otlp.names(self.received())
        self.assertEqual(sorted(names), [
            "k6_checks_occurred_total", "k6_checks_total", "k6_http_req_duration_milliseconds_bucket",
            "k6_http_req_duration_milliseconds_count", "k6_http_req_duration_milliseconds_sum",
            "k6_http_reqs_total", "k6_vus"])

    def test_queries_naming_an_unsent_metric_or_label_are_problems(self):
        have = k6_otlp.names(self.received())
        good = [("ok", 'sum by (status) (rate(k6_http_reqs_total[1m]))'),
                ("ok", "histogram_quantile(0.95, sum by (le) (rate(k6_http_req_duration_milliseconds_bucket[1m])))"),
                ("ok", "sum(rate(k6_checks_occurred_total[1m])) / sum(rate(k6_checks_total[1m]))")]
        self.assertEqual(k6_otlp.problems(have, good), [])
        bad = [("p1", 'sum(rate(k6_checks_total{condition="nonzero"}[1m]))'),
               ("p2", "max(k6_http_req_duration_p95)")]
        found = k6_otlp.problems(have, bad)
        self.assertEqual(len(found), 2, found)
        self.assertIn("k6_checks_total has no label 'condition'", found[0])
        self.assertIn("k6_http_req_duration_p95 is not sent", found[1])

    def test_remote_write_queries_are_left_to_the_remote_write_check(self):
        dashboard = {"panels": [{"title": "t", "targets": [
            {"expr": "max(k6_http_req_duration_p95)", "legendFormat": "p95 (remote write)"},
            {"expr": "sum(k6_vus)", "legendFormat": "VUs"}]}]}
        self.assertEqual(k6_otlp.otel_queries(dashboard), [("t", "sum(k6_vus)")])


if __name__ == "__main__":
    unittest.main()
