"""Tests of tools/check_dashboards.py's alert coverage: `python3 -m unittest discover -s tools`."""

import pathlib
import tempfile
import unittest

import check_dashboards as cd

RULES = """
groups:
  - name: g
    rules:
      - record: job:x:rate5m
        expr: rate(x[5m])
      - alert: SagaDeadLetters
        expr: x > 0
      - alert: SagaDeadLetterRatioHigh
        expr: x > 0.001
"""


def panel(description: str) -> dict:
    return {"type": "timeseries", "title": "t", "description": description}


class AlertCoverage(unittest.TestCase):
    def test_alert_names_are_read_from_every_rules_file_and_recording_rules_are_not(self):
        with tempfile.TemporaryDirectory() as tmp:
            (pathlib.Path(tmp) / "a.yml").write_text(RULES)
            (pathlib.Path(tmp) / "b.yml").write_text("groups: [{name: h, rules: [{alert: ServiceDown, expr: up == 0}]}]")
            self.assertEqual(cd.alert_names(pathlib.Path(tmp)), ["SagaDeadLetters", "SagaDeadLetterRatioHigh", "ServiceDown"])

    def test_an_alert_counts_as_shown_only_when_a_panel_names_it_whole(self):
        alerts = ["SagaDeadLetters", "SagaDeadLetterRatioHigh"]
        # "Alert SagaDeadLetterRatioHigh" must not count for SagaDeadLetters (a prefix of it).
        docs = [{"panels": [{"type": "row", "title": "r", "panels": [panel("Alert SagaDeadLetterRatioHigh: 0.1 %.")]}]}]
        self.assertEqual(cd.alerts_without_panel(alerts, docs), ["SagaDeadLetters"])
        docs[0]["panels"].append(panel("Alert SagaDeadLetters: any dead letter."))
        self.assertEqual(cd.alerts_without_panel(alerts, docs), [])

    def test_the_repository_has_a_panel_for_every_alert(self):
        import json
        docs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(cd.DASHBOARDS.glob("*.json"))]
        alerts = cd.alert_names()
        self.assertGreaterEqual(len(alerts), 10)
        self.assertEqual(cd.alerts_without_panel(alerts, docs), [])


if __name__ == "__main__":
    unittest.main()
