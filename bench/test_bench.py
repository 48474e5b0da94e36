"""Tests of bench/bench.py's pure helpers: python3 -m unittest discover -s bench -p 'test_*.py'."""

import importlib.util
import json
import os
import tempfile
import unittest
from pathlib import Path

_spec = importlib.util.spec_from_file_location("bench_harness", Path(__file__).resolve().parent / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

# A real /proc/<pid>/stat line, with a command name that holds a space and a parenthesis.
STAT = (
    "4242 (postgres: x) idle) S 900 4242 4242 0 -1 4194560 1500 0 0 0 "
    "123 45 6 7 20 0 1 0 100 200000000 3000 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
)


class ProcTest(unittest.TestCase):
    def test_stat_fields_are_counted_after_the_last_parenthesis(self):
        self.assertEqual(
            bench.proc_stat_fields(STAT), {"ppid": 900, "utime": 123, "stime": 45, "cutime": 6, "cstime": 7}
        )

    def test_this_process_stat_reads(self):
        own = bench.read_stat(os.getpid())
        self.assertEqual(own["ppid"], os.getppid())
        self.assertIsNone(bench.read_stat(2**22 + 12345))

    def test_status_kb(self):
        text = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nRssAnon:\t 512 kB\nThreads:\t4\n"
        self.assertEqual(bench.status_kb(text), {"VmHWM": 2048, "VmRSS": 1024, "RssAnon": 512})

    def test_busy_ticks_leaves_out_idle_and_iowait(self):
        # user nice system idle iowait irq softirq steal guest guest_nice
        self.assertEqual(bench.busy_ticks("cpu  10 1 5 1000 50 2 3 4 9 0\ncpu0 1 2 3\n"), 10 + 1 + 5 + 2 + 3 + 4)

    def test_postgres_children_of_this_run(self):
        ours = {"bench_1_order_svc"}
        counts = lambda title: bench.postgres_child_counts(title, ours)  # noqa: E731
        self.assertTrue(counts("postgres: 15/main: postgres bench_1_order_svc 127.0.0.1(4321) idle\0\0"))
        self.assertTrue(counts("postgres: 15/main: autovacuum worker bench_1_order_svc"))
        self.assertTrue(counts("postgres: 15/main: checkpointer "))
        self.assertTrue(counts("postgres: 15/main: walwriter "))
        self.assertFalse(counts("postgres: 15/main: postgres bench_2_order_svc 127.0.0.1(4322) idle"))
        self.assertFalse(counts("postgres: 15/main: postgres postgres [local] idle"))
        self.assertFalse(counts("postgres: 15/main: autovacuum worker other"))

    def test_meter_reads_its_own_process(self):
        meter = bench.Meter({"me": os.getpid()})
        ticks = meter.ticks()
        self.assertIn("me", ticks)
        self.assertIn("machine", ticks)
        self.assertGreater(meter.rss_mb()["me"], 0)


class FiguresTest(unittest.TestCase):
    def test_cpu_figures_by_group_and_per_saga(self):
        tick = bench.CLK_TCK
        before = {"order-svc": 0, "postgres": 10 * tick, "machine": 0}
        after = {"order-svc": 2 * tick, "postgres": 14 * tick, "machine": 8 * tick}
        got = bench.cpu_figures(before, after, 500.0, 4.0, 100, "saga", 2)
        self.assertEqual(got["cpu_ms"], {"order-svc": 2000.0, "postgres": 4000.0, "load-generator": 500.0})
        self.assertEqual(got["cpu_ms_total"], 6500.0)
        self.assertEqual(got["cpu_ms_per_saga"], {"total": 65.0, "order-svc": 20.0, "postgres": 40.0, "load-generator": 5.0})
        self.assertEqual(got["machine_cpu_ms"], 8000.0)
        self.assertEqual(got["machine_cpu_utilisation"], 1.0)

    def test_nothing_finished_gives_no_per_unit_figures(self):
        got = bench.cpu_figures({"saga": 0}, {"saga": 1}, None, 1.0, 0, "order", 2)
        self.assertIsNone(got["cpu_ms_per_order"])
        self.assertNotIn("machine_cpu_ms", got)

    def test_cpu_line(self):
        figures = {
            "cpu_ms_per_saga": {"total": 3.0, "order-svc": 1.0, "postgres": 2.0},
            "db": {
                "source": "pg_stat_statements", "statements_per_saga": 40.0, "calls_per_saga": 52.0,
                "transactions_per_saga": 8.5, "write_transactions_per_saga": 6.5,
            },
        }
        self.assertEqual(
            bench.cpu_line(figures),
            "CPU ms per saga 3.0 (order-svc 1.0, postgres 2.0); 40.0 statements, 52.0 calls, 8.5 transactions "
            "(6.5 writing) per saga [pg_stat_statements]",
        )
        self.assertEqual(bench.cpu_line({"cpu_ms_per_order": None}, "order"), "CPU ms per order: -")

    def test_accept_summary_and_overload(self):
        report = {
            "planned": 200, "sent": 200, "accepted": 180, "accepted_per_sec": 45.0, "rejected": 0, "server_errors": 15,
            "transport_errors": 0, "dropped": 5, "errors": {"HTTP 503": 15},
            "http_latency_ms": {"p50": 2.0, "p99": 30.0, "p99_9": 40.0, "max": 41.0},
        }
        step = bench.accept_summary(50, report)
        self.assertEqual(step["errors"], 20)
        self.assertEqual(step["error_rate"], 0.1)
        self.assertFalse(step["accept_ok"])
        self.assertFalse(bench.overloaded(step))
        step["error_rate"] = 0.2
        self.assertTrue(bench.overloaded(step))


def _step(rate, finished, http_p99, saga_p99, cpu=None):
    step = {
        "offered_per_sec": rate, "finished_per_sec": finished, "accepted_per_sec": rate,
        "http_ms": {"p99": http_p99}, "saga_ms": {"p99": saga_p99},
    }
    if cpu is not None:
        step["cpu_ms_per_saga"] = {"total": sum(cpu.values()), **cpu}
    return step


class ChartsTest(unittest.TestCase):
    def test_series_of_a_new_result(self):
        result = {
            "production": {
                "steps": [_step(50, 49.5, 5.0, 120.0, {"order-svc": 1.0, "postgres": 2.0})],
                "low_load_latency": _step(10, 10.0, 3.0, 90.0),
            },
            "embedded": {"steps": [_step(50, 50.0, 6.0, 110.0)]},
            "accept_isolation": {
                "steps": [{"offered_per_sec": 100, "accepted_per_sec": 99.0, "http_ms": {"p99": 4.0},
                           "cpu_ms_per_order": {"total": 1.5, "order-svc": 1.0, "postgres": 0.5}}],
            },
        }
        series = bench.chart_series(result)
        self.assertEqual(series["goodput"]["sagas finished/s, production"], [(50, 49.5)])
        self.assertEqual(series["goodput"]["POST accepted/s, accept path alone"], [(100, 99.0)])
        self.assertEqual(series["saga_p99"]["production, low load"], [(10, 90.0)])
        self.assertEqual(series["cpu"]["production: CPU ms per saga"], [(50, {"order-svc": 1.0, "postgres": 2.0})])
        self.assertEqual(series["cpu_total"]["accept path alone: CPU ms per order"], [(100, 1.5)])

    def test_series_of_an_older_result_without_the_new_figures(self):
        old = json.loads((Path(__file__).resolve().parent / "results/2026-12-06-full.json").read_text())
        series = bench.chart_series(old)
        self.assertTrue(series["goodput"]["sagas finished/s, production"])
        self.assertEqual(series["cpu"]["production: CPU ms per saga"], [])
        self.assertEqual(series["goodput"]["POST accepted/s, accept path alone"], [])

    def test_previous_result_is_the_newest_other_of_the_profile(self):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            (d / "a.json").write_text(json.dumps({"profile": "full", "date": "2026-12-01T10:00:00+00:00"}))
            (d / "b.json").write_text(json.dumps({"profile": "full", "date": "2026-12-05T10:00:00+00:00"}))
            (d / "c.json").write_text(json.dumps({"profile": "short", "date": "2026-12-09T10:00:00+00:00"}))
            (d / "broken.json").write_text("{")
            self.assertEqual(bench.previous_result(d, "full"), d / "b.json")
            self.assertEqual(bench.previous_result(d, "full", exclude=d / "b.json"), d / "a.json")
            self.assertIsNone(bench.previous_result(d, "short", exclude=d / "c.json"))


if __name__ == "__main__":
    unittest.main()
