"""Tests of check_otel_collector_config: the repository's config passes, and each kind of
mistake the checker promises to catch is caught. Run: python3 -m unittest discover tools"""

import copy
import pathlib
import unittest

import check_otel_collector_config as checker

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = checker.load((ROOT / "otel-collector-config.yml").read_text(encoding="utf-8"))


def problems(mutate) -> list[str]:
    config = copy.deepcopy(CONFIG)
    mutate(config)
    return checker.check(config)


class RepositoryConfig(unittest.TestCase):
    def test_the_repository_config_has_no_problem(self):
        self.assertEqual(checker.check(CONFIG), [])

    def test_it_has_otlp_grpc_and_http_traces_to_jaeger_and_metrics_to_prometheus(self):
        self.assertEqual(set(CONFIG["receivers"]["otlp"]["protocols"]), {"grpc", "http"})
        pipelines = CONFIG["service"]["pipelines"]
        self.assertEqual(pipelines["traces"]["exporters"], ["otlp/jaeger"])
        self.assertEqual(pipelines["metrics"]["exporters"], ["prometheus"])
        for pipeline in pipelines.values():
            self.assertEqual(pipeline["processors"], ["memory_limiter", "batch"])


class Mistakes(unittest.TestCase):
    def assertCaught(self, mutate, fragment):
        found = problems(mutate)
        self.assertTrue(any(fragment in p for p in found), f"{fragment!r} not in {found}")

    def test_duplicate_keys_are_refused(self):
        with self.assertRaises(checker.yaml.YAMLError):
            checker.load("receivers:\n  otlp: {}\n  otlp: {}\n")

    def test_unknown_component_type(self):
        self.assertCaught(lambda c: c["exporters"].update({"jaeger": {"endpoint": "jaeger:14250"}}),
                          "unknown exporter type 'jaeger'")

    def test_unknown_setting(self):
        self.assertCaught(lambda c: c["processors"]["batch"].update({"timout": "1s"}), "unknown setting 'timout'")

    def test_missing_required_setting(self):
        self.assertCaught(lambda c: c["exporters"]["otlp/jaeger"].pop("endpoint"), "missing setting 'endpoint'")

    def test_undefined_reference(self):
        self.assertCaught(lambda c: c["service"]["pipelines"]["traces"]["exporters"].append("otlp/tempo"),
                          "'otlp/tempo' is not defined")

    def test_undefined_extension(self):
        self.assertCaught(lambda c: c["service"]["extensions"].append("pprof"), "'pprof' is not defined")

    def test_unused_component(self):
        self.assertCaught(lambda c: c["exporters"].update({"debug": {}}), "exporters.debug: defined but not used")

    def test_unused_extension(self):
        self.assertCaught(lambda c: c["service"].update({"extensions": []}), "extensions.health_check: defined but not used")

    def test_signal_not_supported(self):
        self.assertCaught(lambda c: c["service"]["pipelines"]["traces"]["exporters"].append("prometheus"),
                          "'prometheus' does not support traces")

    def test_processor_order(self):
        self.assertCaught(lambda c: c["service"]["pipelines"]["metrics"].update(processors=["batch", "memory_limiter"]),
                          "memory_limiter must come first")

    def test_bad_pipeline_id(self):
        self.assertCaught(lambda c: c["service"]["pipelines"].update({"spans": {"receivers": ["otlp"], "exporters": ["otlp/jaeger"]}}),
                          "a pipeline id is traces, metrics or logs")

    def test_port_clash(self):
        self.assertCaught(lambda c: c["exporters"]["prometheus"].update(endpoint="0.0.0.0:4317"), "port 4317 is also used")

    def test_bad_duration(self):
        self.assertCaught(lambda c: c["processors"]["batch"].update(timeout="2 seconds"), "is not a duration")

    def test_unknown_top_level_section(self):
        self.assertCaught(lambda c: c.update(pipelines={}), "unknown top-level section 'pipelines'")


if __name__ == "__main__":
    unittest.main()
