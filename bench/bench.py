#!/usr/bin/env python3
"""The saga benchmark (BENCHMARKS.md): the production topology on this machine, measured.

    python3 bench/bench.py --profile short      # a smoke run (CI), about 2 minutes
    python3 bench/bench.py --profile full       # the recorded run, about 15 minutes

It builds the release binaries, then starts PostgreSQL databases (one per service, created and
dropped here), the mock-cluster broker as its own process and the five services as separate
processes, and measures with `sagactl load` (an open model: orders leave at the arrival rate
whatever the responses do):

- the accept path: `POST /orders` stepped up until p99 breaks 25 ms or errors appear, with
  p50/p99/p99.9 at each step;
- the saga: completed sagas per second at each step (a step is sustainable when there were no
  errors, every saga ended within 1.2 x the step + 1 s, and placed->terminal p99 stayed within
  2 s: the backlog did not grow), then
  placed->terminal p50/p99/p99.9 at 1,000 orders/s offered, or 70 % of the maximum if lower;
- the ceiling in the same run: PostgreSQL's one-row insert commit rate (pgbench, the same
  concurrency as the services' pools) and the broker's produce/consume rate for messages of
  the sagas' size; database commits and Kafka messages per saga, and the ratio
  saga throughput / (commit ceiling / commits per saga);
- peak RSS per service (VmHWM);
- the embedded mode (one process, SQLite, in-process mock cluster): the same saga steps;
- the accept path in isolation: order-svc, its broker process and PostgreSQL only (no saga
  runs behind it), `POST /orders` stepped up to 5,000/s, p50/p99/p99.9 and the error rate;
- latency at low load: placed->terminal p50/p99 at 10 sagas/s, on the fresh production
  topology before its steps;
- overload: three times the highest sustained rate for a step (sagas completed per second
  against that maximum, and the answers: admission control's 503s), then the seconds until
  nothing is in flight and a step at the latency phase's rate from there.

Where the time goes, at every step: the CPU time (utime + stime from /proc) of each service,
the broker process, PostgreSQL (the postmaster and all its children) and the load generator,
and CPU ms per saga; RSS at the step's end; database statements per saga (pg_stat_statements
when it is loaded, with the statements PostgreSQL spent the most time on) and transactions per
saga (pg_stat_database).

Results go to a JSON file (--out, default bench/results/<date>-<profile>.json) and a summary
is printed; charts are drawn beside the JSON (<stem>-goodput.svg, -p99.svg, -cpu.svg, with the
previous run of the profile for comparison) by matplotlib from a venv the script installs
(bench/requirements.txt, pinned by hash); without it the JSON is still written. Speed is never
asserted: the exit code says only whether the benchmark ran.
Needs: cargo, PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres),
pgbench, psql, kcat.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import secrets
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The binaries' directory: target/release, or target/debug with --build debug (CI's smoke run
# of the harness; its figures say nothing about speed).
BIN = ROOT / "target/release"
SERVICES = ["order-svc", "inventory-svc", "payment-svc", "shipping-svc", "notification-svc"]
ACCEPT_P99_MS = 25.0
SAGA_P99_BOUND_MS = 2000.0
# Connections per service pool in the run (and so pgbench's concurrency: the same total).
POOL = 4
# The run's admin key (order-svc is configured with its digest, as in production); no rate
# limit, so that the arrival rate is what the API gets.
API_KEY = secrets.token_urlsafe(24)
API_ENV = {
    "ORDER_API_KEYS": "admin:" + hashlib.sha256(API_KEY.encode()).hexdigest(),
    "ORDER_API_RATE_LIMIT_PER_SEC": "0",
    # One key sends all the load: let it fill the shared in-flight limit, as before that limit
    # was per key too.
    "ORDER_API_MAX_IN_FLIGHT_PER_KEY": "512",
}

PROFILES = {
    "short": {
        "rates": [50, 100],
        "step_secs": 4,
        "latency_secs": 4,
        "pgbench_secs": 3,
        "broker_messages": 5000,
        "embedded_rates": [50],
        "accept_rates": [50, 100],
        "low_load_secs": 3,
    },
    "full": {
        # Finer steps where this machine's limits have been (the run stops at the first step
        # that is neither accept-ok nor sustainable, so the steps beyond cost nothing).
        "rates": [25, 50, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000],
        "step_secs": 15,
        "latency_secs": 30,
        "pgbench_secs": 15,
        # The mock cluster keeps about 5 MiB per partition: stay under it.
        "broker_messages": 20000,
        "embedded_rates": [25, 50, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 2000],
        # The accept path alone (order-svc, its broker, PostgreSQL): stops after the first step
        # that is overloaded (ACCEPT_OVERLOAD_*).
        "accept_rates": [250, 500, 1000, 2000, 3000, 5000],
        "low_load_secs": 60,
    },
}


# Latency at low load: placed->terminal at this arrival rate (every profile).
LOW_LOAD_RATE = 10
# The overload phase offers this many times the highest sustained rate.
OVERLOAD_FACTOR = 3
# The accept path in isolation stops after a step with more errors or a slower p99 than this:
# past it the step measures a queue, and the steps beyond cost time for nothing.
ACCEPT_OVERLOAD_ERROR_RATE = 0.1
ACCEPT_OVERLOAD_P99_MS = 1000.0
# A whole hour: in the accept-path phase no saga runs behind order-svc, so the orders stay
# open, and their deadline must not cancel them in the middle of the steps.
ISOLATION_DEADLINE_MS = "3600000"
CLK_TCK = os.sysconf("SC_CLK_TCK")
REQUIREMENTS = ROOT / "bench/requirements.txt"
# The venv with the charts' packages (bench/requirements.txt), reused while that file is
# unchanged.
VENV = Path(
    os.environ.get("SAGA_BENCH_VENV")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "saga/bench-venv"
)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, **kw)


class Process:
    """A child process whose JSON log lines are collected; `listeners` maps each listener it
    announced ("listening": `api`, `ops`) to its address."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], expect: tuple[str, ...] = ("ops",)):
        self.name = name
        self.lines: list[str] = []
        self.listeners: dict[str, str] = {}
        self._expect = expect
        self._listening = threading.Event()
        self.proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if '"listening"' in line:
                try:
                    fields = json.loads(line)
                except json.JSONDecodeError:
                    continue
                # The endpoint a service serves while still connecting goes away again.
                if fields.get("listener") not in (None, "starting"):
                    self.listeners[fields["listener"]] = fields.get("addr")
                if all(role in self.listeners for role in self._expect):
                    self._listening.set()

    def wait_line(self, pattern: str, timeout: float = 120) -> re.Match:
        """The first output line matching `pattern`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: no line like {pattern!r}:\n" + "\n".join(self.lines[-10:]))

    def wait_listening(self, timeout: float = 60) -> dict[str, str]:
        if not self._listening.wait(timeout):
            raise RuntimeError(f"{self.name} did not listen within {timeout}s:\n" + "\n".join(self.lines[-10:]))
        return self.listeners

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kb = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
        return round(kb / 1024, 1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def wait_ready(base: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            http_get(f"{base}/readyz")
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{base}/readyz never answered 200")


def metric_sum(base: str, name: str) -> float:
    total = 0.0
    for line in http_get(f"{base}/metrics").splitlines():
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in "{ "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- Where the time goes: CPU and memory per process, from /proc ----------------------------


def proc_stat_fields(text: str) -> dict[str, int]:
    """The fields of a /proc/<pid>/stat line used here (proc(5)). The command name, field 2,
    may hold spaces and parentheses, so the fields are counted after its last ')'."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): field n is rest[n - 3].
    return {
        "ppid": int(rest[1]),
        "utime": int(rest[11]),  # field 14, in clock ticks
        "stime": int(rest[12]),  # field 15
        "cutime": int(rest[13]),  # field 16: reaped children's utime
        "cstime": int(rest[14]),  # field 17
    }


def read_stat(pid: int) -> dict[str, int] | None:
    try:
        return proc_stat_fields(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def status_kb(text: str) -> dict[str, int]:
    """The `kB` fields of a /proc/<pid>/status text (VmRSS, VmHWM, RssAnon, ...)."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+):\s+(\d+) kB$", text, re.M)}


def read_status_kb(pid: int) -> dict[str, int]:
    try:
        return status_kb(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return {}


def busy_ticks(proc_stat: str) -> int:
    """All cores' busy time in /proc/stat's first line: user, nice, system, irq, softirq and
    steal (guest time is already in user)."""
    fields = [int(f) for f in proc_stat.splitlines()[0].split()[1:]]
    return sum(fields[i] for i in (0, 1, 2, 5, 6, 7) if i < len(fields))


def ticks_ms(ticks: float) -> float:
    return ticks * 1000.0 / CLK_TCK


def cpu_figures(
    before: dict[str, int], after: dict[str, int], loadgen_ms: float | None, wall_secs: float, units: int, per: str,
    cores: int,
) -> dict:
    """A step's CPU figures from two Meter.ticks() samples: CPU ms by process group, their
    total, CPU ms per `per` (saga, or accepted order) over `units` of them, and the whole
    machine's busy time over the same window (what no group accounts for is the kernel's work
    for nobody in particular, and other processes)."""
    cpu = {g: round(ticks_ms(after[g] - before[g]), 1) for g in before if g != "machine" and g in after}
    if loadgen_ms is not None:
        cpu["load-generator"] = round(loadgen_ms, 1)
    total = round(sum(cpu.values()), 1)
    figures = {
        "cpu_window_secs": round(wall_secs, 2),
        "cpu_ms": cpu,
        "cpu_ms_total": total,
        f"cpu_ms_per_{per}": (
            {"total": round(total / units, 2), **{g: round(v / units, 2) for g, v in cpu.items()}} if units else None
        ),
    }
    if "machine" in before and "machine" in after:
        machine_ms = ticks_ms(after["machine"] - before["machine"])
        figures["machine_cpu_ms"] = round(machine_ms, 1)
        figures["machine_cpu_utilisation"] = round(machine_ms / (wall_secs * 1000 * cores), 3) if wall_secs else None
    return figures


def postmaster_pid(admin_url: str) -> int | None:
    """PostgreSQL's postmaster, when it runs on this machine: the parent of its checkpointer (a
    process that lives as long as the server)."""
    try:
        out = run(
            ["psql", admin_url, "-qAtc", "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"],
            capture_output=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    stat = read_stat(int(out)) if out.isdigit() else None
    if not stat:
        return None  # a server elsewhere: its processes are not ours to see
    try:
        comm = Path(f"/proc/{stat['ppid']}/comm").read_text().strip()
    except OSError:
        return None
    return stat["ppid"] if "postgres" in comm or "postmaster" in comm else None


# A PostgreSQL process title (update_process_title, on by default) of a client backend ends in
# its client's address: "postgres: 15/main: postgres bench_x_order_svc 127.0.0.1(43210) idle".
CLIENT_BACKEND = re.compile(r"\(\d+\)|\[local\]")


def postgres_child_counts(title: str, databases: set[str]) -> bool:
    """Whether a child of the postmaster, by its process title, is this run's: a backend or
    autovacuum worker of one of `databases`, or a background process that serves the whole
    cluster (checkpointer, background writer, WAL writer, launchers). Backends of other
    databases (another client of the same server) are not."""
    words = set(title.replace("\0", " ").split())
    if words & databases:
        return True
    return not (CLIENT_BACKEND.search(title) or "autovacuum worker" in title or "parallel worker" in title)


class Meter:
    """CPU time and memory of a phase's processes, by group, from /proc.

    `pids` maps a group (a service, "broker", "saga") to the pid of its one process; with a
    `postmaster`, the group "postgres" is the postmaster itself and those of its children that
    are this run's (`postgres_child_counts`: the backends and autovacuum workers of
    `databases`, and the background processes, which serve every database of the cluster, so a
    server busy with other clients at the same time still shows in them). A backend that exits
    between two samples loses its ticks (they go to the postmaster's cutime, which holds every
    client's exited backends and so is not counted): the services keep pooled connections, so
    that is small, and this script's own queries go to a database of their own. The load
    generator, a child of this script per step, is measured with wait4 (`load`). "machine" is
    the whole machine's busy time, /proc/stat.
    """

    def __init__(self, pids: dict[str, int], postmaster: int | None = None, databases: list[str] = ()):
        self.pids = pids
        self.postmaster = postmaster
        self.databases = set(databases)

    def postgres_pids(self) -> list[int]:
        if not self.postmaster:
            return []
        children = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                stat = read_stat(int(entry.name))
                if stat and stat["ppid"] == self.postmaster:
                    try:
                        title = (entry / "cmdline").read_text()
                    except OSError:
                        continue
                    if postgres_child_counts(title, self.databases):
                        children.append(int(entry.name))
        return children

    def ticks(self) -> dict[str, int]:
        out = {}
        for group, pid in self.pids.items():
            stat = read_stat(pid)
            if stat:
                out[group] = stat["utime"] + stat["stime"]
        if self.postmaster:
            main = read_stat(self.postmaster)
            if main:
                total = main["utime"] + main["stime"]
                for pid in self.postgres_pids():
                    stat = read_stat(pid)
                    if stat:
                        total += stat["utime"] + stat["stime"]
                out["postgres"] = total
        try:
            out["machine"] = busy_ticks(Path("/proc/stat").read_text())
        except OSError:
            pass
        return out

    def rss_mb(self) -> dict[str, float]:
        """VmRSS now, by group. PostgreSQL's processes share their shared buffers and code: the
        group counts each process's private memory (RssAnon) and the largest shared part
        (RssFile + RssShmem) once."""
        out = {}
        for group, pid in self.pids.items():
            kb = read_status_kb(pid)
            if "VmRSS" in kb:
                out[group] = round(kb["VmRSS"] / 1024, 1)
        if self.postmaster:
            statuses = [read_status_kb(pid) for pid in [self.postmaster, *self.postgres_pids()]]
            statuses = [kb for kb in statuses if "RssAnon" in kb]
            if statuses:
                private = sum(kb["RssAnon"] for kb in statuses)
                shared = max(kb.get("RssFile", 0) + kb.get("RssShmem", 0) for kb in statuses)
                out["postgres"] = round((private + shared) / 1024, 1)
        return out


# --- Database round trips per saga -----------------------------------------------------------

# Transaction control, counted in `calls` (each is a round trip) but not in `statements`
# (a PostgreSQL regular expression: \y is its word boundary).
TRANSACTION_CONTROL = r"^\s*(begin|commit|rollback|savepoint|release|start\s+transaction|end)\y"


def per_unit(value: float | None, units: int, digits: int = 2) -> float | None:
    return round(value / units, digits) if units and value is not None else None


class DbStats:
    """Database work of a step, over the run's databases `names`.

    With pg_stat_statements loaded (shared_preload_libraries; BENCHMARKS.md says how), the
    extension is created in each database and its counters are reset per database at each
    step's start: `calls` (every statement executed, transaction control included: the round
    trips), `statements` (the same without BEGIN/COMMIT/ROLLBACK/SAVEPOINT/RELEASE) and the
    distinct statements seen. Without it, only pg_stat_database: transactions (xact_commit +
    xact_rollback) and tuples (tup_*, a hint of the work). Transactions come from
    pg_stat_database either way; `source` says where the statement figures came from.

    The queries run from a database of their own, so that they count in neither. A backend
    sends its pg_stat_database counters at most once a second, and one that then goes idle only
    after 10 s (PostgreSQL 15), so `transactions` (reads included) is late by up to that: the
    step's end is read after a short pause (`SETTLE_SECS`), and the figure is a hint at low
    rates and short steps. `write_transactions` (the transaction id counter's advance,
    server-wide) and pg_stat_statements count as each transaction or statement ends.
    """

    SETTLE_SECS = 1.1

    def __init__(self, pg: "Postgres", names: list[str], home: str = "stats"):
        self.pg = pg
        self.names = names
        self.home = pg.url(pg.create(home))
        self.array = "ARRAY[" + ",".join(f"'{n}'" for n in names) + "]::name[]"
        for url in [self.home, *(pg.url(n) for n in names)]:
            subprocess.run(
                ["psql", url, "-qAtc", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"], capture_output=True
            )
        probe = subprocess.run(
            ["psql", self.home, "-qAtc", "SELECT 1 FROM pg_stat_statements LIMIT 1"], capture_output=True, text=True
        )
        self.source = "pg_stat_statements" if probe.returncode == 0 else "pg_stat_database"
        if self.source != "pg_stat_statements":
            log("pg_stat_statements is not loaded (shared_preload_libraries): transactions per saga only")

    def _query(self, sql: str) -> list[str]:
        return run(["psql", self.home, "-qAtc", sql], capture_output=True).stdout.strip().split("|")

    def _rows(self, sql: str) -> list[str]:
        return [line for line in run(["psql", self.home, "-qAtc", sql], capture_output=True).stdout.splitlines() if line]

    def _database(self) -> list[int]:
        # The snapshot's xmax is the next transaction id: reading it assigns none, so its delta
        # counts the writing transactions in between exactly (server-wide, as in `latency`).
        row = self._query(
            "SELECT coalesce(sum(xact_commit + xact_rollback), 0), coalesce(sum(tup_returned), 0), "
            "coalesce(sum(tup_fetched), 0), coalesce(sum(tup_inserted), 0), coalesce(sum(tup_updated), 0), "
            "coalesce(sum(tup_deleted), 0), txid_snapshot_xmax(txid_current_snapshot()) "
            f"FROM pg_stat_database WHERE datname = ANY({self.array})"
        )
        return [int(v) for v in row]

    def begin(self) -> list[int]:
        if self.source == "pg_stat_statements":
            self._query(
                f"SELECT pg_stat_statements_reset(0, oid, 0) FROM pg_database WHERE datname = ANY({self.array})"
            )
        return self._database()

    def end(self, before: list[int], units: int, per: str) -> dict:
        time.sleep(self.SETTLE_SECS)
        after = self._database()
        delta = [a - b for a, b in zip(after, before)]
        out = {
            "source": self.source,
            "transactions": delta[0],
            f"transactions_per_{per}": per_unit(delta[0], units),
            f"tuples_per_{per}": {
                name: per_unit(v, units, 1)
                for name, v in zip(("returned", "fetched", "inserted", "updated", "deleted"), delta[1:6])
            },
            "write_transactions": delta[6],
            f"write_transactions_per_{per}": per_unit(delta[6], units),
        }
        if self.source == "pg_stat_statements":
            calls, statements, distinct = (
                int(v or 0)
                for v in self._query(
                    "SELECT coalesce(sum(calls), 0), "
                    f"coalesce(sum(calls) FILTER (WHERE query !~* '{TRANSACTION_CONTROL}'), 0), count(*) "
                    "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                    f"WHERE d.datname = ANY({self.array})"
                )
            )
            out.update({
                "calls": calls,
                f"calls_per_{per}": per_unit(calls, units),
                "statements": statements,
                f"statements_per_{per}": per_unit(statements, units),
                "distinct_statements": distinct,
                "top_statements": self._top(units, per),
            })
        return out

    def _top(self, units: int, per: str, limit: int = 12) -> list[dict]:
        """The statements PostgreSQL spent the most execution time on (planning excluded; the
        statement's text cut to 120 characters, one line), with calls and milliseconds per unit."""
        rows = self._rows(
            "SELECT d.datname, sum(s.calls), sum(s.total_exec_time), "
            "left(regexp_replace(s.query, '\\s+', ' ', 'g'), 120) AS q "
            "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            f"WHERE d.datname = ANY({self.array}) GROUP BY d.datname, q ORDER BY 3 DESC LIMIT {limit}"
        )
        top = []
        for row in rows:
            database, calls, total_ms, query = row.split("|", 3)
            top.append({
                "database": database.split("_", 2)[-1],
                "query": query,
                f"calls_per_{per}": per_unit(int(calls), units),
                f"exec_ms_per_{per}": per_unit(float(total_ms), units, 3),
                "ms_per_call": round(float(total_ms) / int(calls), 4) if int(calls) else None,
            })
        return top


class Postgres:
    def __init__(self, admin_url: str, run_id: str):
        self.admin_url = admin_url
        self.base = admin_url.rsplit("/", 1)[0]
        self.run_id = run_id
        self.names: list[str] = []

    def create(self, suffix: str) -> str:
        name = f"bench_{self.run_id}_{suffix}".replace("-", "_")
        run(["psql", self.admin_url, "-qAtc", f"CREATE DATABASE {name}"], stdout=subprocess.DEVNULL)
        self.names.append(name)
        return name

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def write_transactions(self) -> int:
        """The server's transaction id counter: it moves only for transactions that write (reads
        get no id), so its delta over a quiet interval counts the writing transactions."""
        out = run(["psql", self.admin_url, "-qAtc", "SELECT txid_current()"], capture_output=True).stdout
        return int(out.strip())

    def drop_all(self) -> None:
        for name in self.names:
            subprocess.run(["psql", self.admin_url, "-qAtc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


def load(api: str, rate: float, secs: float, out: Path, wait: float) -> dict:
    """One `sagactl load` step; returns its JSON report, with the load generator's own CPU time
    (`loadgen_cpu_ms`, its rusage from wait4) and peak RSS (`loadgen_peak_rss_mb`) added."""
    cmd = [
        str(BIN / "sagactl"), "load",
        "--api-url", api, "--rate", str(rate), "--duration", f"{secs}s",
        "--mix", "completed=100", "--wait-timeout", f"{int(wait)}s", "--out", str(out),
        "--max-in-flight", "4096",
    ]
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=stderr, text=True, env={**os.environ, "SAGA_API_KEY": API_KEY}
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if not out.exists():
            stderr.seek(0)
            raise RuntimeError(f"sagactl load wrote no report (exit {proc.returncode}):\n{stderr.read()[-2000:]}")
    report = json.loads(out.read_text())
    report["loadgen_cpu_ms"] = (usage.ru_utime + usage.ru_stime) * 1000
    report["loadgen_peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return report


def measured_load(
    api: str, rate: float, secs: float, out: Path, wait: float, meter: Meter | None, db: DbStats | None,
    per: str = "saga",
) -> tuple[dict, dict]:
    """`load`, with where the time went: CPU by process group from the load's start to its end,
    per saga finished (or, with per="order", per order accepted), RSS at the end, and the
    database's work. Returns the report and those figures (keys to add to the step)."""
    db_before = db.begin() if db else None
    before = meter.ticks() if meter else {}
    started = time.monotonic()
    report = load(api, rate, secs, out, wait)
    wall = time.monotonic() - started
    after = meter.ticks() if meter else {}
    units = report.get("finished", 0) if per == "saga" else report.get("accepted", 0)
    figures = cpu_figures(before, after, report["loadgen_cpu_ms"], wall, units, per, os.cpu_count() or 1)
    figures["rss_mb"] = {**(meter.rss_mb() if meter else {}), "load-generator": report["loadgen_peak_rss_mb"]}
    if db:
        figures["db"] = db.end(db_before, units, per)
    return report, figures


def cpu_line(figures: dict, per: str = "saga") -> str:
    """`CPU ms per saga 12.3 (order-svc 1.2, ...)` for the log and the summary."""
    by = figures.get(f"cpu_ms_per_{per}")
    if not by:
        return f"CPU ms per {per}: -"
    parts = ", ".join(f"{g} {v}" for g, v in by.items() if g != "total")
    line = f"CPU ms per {per} {by['total']} ({parts})"
    db = figures.get("db")
    if db:
        work = []
        if db.get(f"statements_per_{per}") is not None:
            work += [f"{db[f'statements_per_{per}']} statements", f"{db[f'calls_per_{per}']} calls"]
        work.append(f"{db[f'transactions_per_{per}']} transactions ({db.get(f'write_transactions_per_{per}')} writing)")
        line += f"; {', '.join(work)} per {per} [{db['source']}]"
    return line


def step_summary(rate: float, secs: float, report: dict) -> dict:
    http, saga = report["http_latency_ms"], report["saga_latency_ms"]
    errors = sum(report.get(k, 0) for k in ("rejected", "server_errors", "transport_errors", "dropped"))
    finished = report.get("finished", 0)
    not_terminal = report.get("not_terminal", 0)
    window = report.get("window_seconds") or 0.0
    # Sustainable: no errors, every saga ended, the last one soon after the last order was sent,
    # and no saga waited long in a backlog (p99 within the seed-level 2 s end-to-end target).
    drained_in_time = window <= secs * 1.2 + 1.0 and (saga.get("p99") or 0) <= SAGA_P99_BOUND_MS
    finished_rate = round(finished / window, 1) if window else 0.0
    return {
        "offered_per_sec": rate,
        "accepted_per_sec": report.get("accepted_per_sec"),
        "errors": errors,
        "http_ms": {k: http.get(k) for k in ("p50", "p99", "p99_9", "max")},
        "accept_ok": errors == 0 and (http.get("p99") or 0) <= ACCEPT_P99_MS,
        "finished": finished,
        "not_terminal": not_terminal,
        "completed_per_sec": report.get("completed_per_sec"),
        "finished_per_sec": finished_rate,
        "saga_ms": {k: saga.get(k) for k in ("p50", "p99", "p99_9", "max")},
        "window_seconds": window,
        "saga_sustainable": errors == 0 and not_terminal == 0 and drained_in_time,
    }


SAGA_GAUGES = ("saga_orders_open", "saga_outbox_backlog_messages", "saga_consumer_lag_messages")


def backlog(bases: list[str], gauges: tuple[str, ...] = SAGA_GAUGES) -> float:
    """Orders not terminal yet, outbox rows not yet published and consumer lag, over every
    service."""
    return sum(metric_sum(b, g) for b in bases for g in gauges)


def drain(bases: list[str], timeout: float = 180, gauges: tuple[str, ...] = SAGA_GAUGES) -> float:
    """Wait until the previous step's work is done, so that each step starts from rest. The
    gauges are sampled (open orders every second, lag and backlog every few seconds), so rest
    is three zero readings in a row, 2 s apart."""
    deadline = time.time() + timeout
    quiet = 0
    left = backlog(bases, gauges)
    while time.time() < deadline:
        quiet = quiet + 1 if left == 0 else 0
        if quiet >= 3:
            return 0
        time.sleep(2)
        left = backlog(bases, gauges)
    return left


def stepped(
    api: str, bases: list[str], rates: list[float], secs: float, work: Path, tag: str,
    meter: Meter | None = None, db: DbStats | None = None,
) -> list[dict]:
    steps = []
    for rate in rates:
        left = drain(bases)
        if left:
            log(f"{tag}: {left} messages still queued from the previous step")
        report, figures = measured_load(api, rate, secs, work / f"{tag}-{rate}.json", max(10, secs), meter, db)
        s = {**step_summary(rate, secs, report), **figures}
        steps.append(s)
        log(
            f"{tag} {rate}/s: accepted {s['accepted_per_sec']}/s errors {s['errors']} http p50/p99/p99.9 "
            f"{s['http_ms']['p50']}/{s['http_ms']['p99']}/{s['http_ms']['p99_9']} ms; finished {s['finished_per_sec']}/s "
            f"saga p99 {s['saga_ms']['p99']} ms sustainable={s['saga_sustainable']}; {cpu_line(s)}"
        )
        if not s["accept_ok"] and not s["saga_sustainable"]:
            break
    return steps


def accept_summary(rate: float, report: dict) -> dict:
    """A step of the accept path alone: what came back to `POST /orders`."""
    http = report["http_latency_ms"]
    errors = sum(report.get(k, 0) for k in ("rejected", "server_errors", "transport_errors", "dropped"))
    planned = report.get("planned") or 0
    return {
        "offered_per_sec": rate,
        "sent": report.get("sent"),
        "accepted": report.get("accepted"),
        "accepted_per_sec": report.get("accepted_per_sec"),
        "errors": errors,
        "error_rate": round(errors / planned, 4) if planned else None,
        "error_kinds": report.get("errors") or {},
        "http_ms": {k: http.get(k) for k in ("p50", "p99", "p99_9", "max")},
        "accept_ok": errors == 0 and (http.get("p99") or 0) <= ACCEPT_P99_MS,
    }


def overloaded(step: dict) -> bool:
    return (step["error_rate"] or 0) > ACCEPT_OVERLOAD_ERROR_RATE or (step["http_ms"]["p99"] or 0) > ACCEPT_OVERLOAD_P99_MS


def pgbench(pg: Postgres, secs: float, clients: int) -> float:
    db = pg.create("pgbench")
    run(["psql", pg.url(db), "-qAtc", "CREATE TABLE one_row (id bigserial PRIMARY KEY, v int NOT NULL)"], stdout=subprocess.DEVNULL)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write("INSERT INTO one_row (v) VALUES (1);\n")
        script = f.name
    out = run(
        [pgbench_bin(), "-n", "-f", script, "-c", str(clients), "-j", "2", "-T", str(int(secs)), pg.url(db)],
        capture_output=True,
    ).stdout
    os.unlink(script)
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


def pgbench_bin() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))
    if not candidates:
        raise RuntimeError("pgbench not found")
    return str(candidates[-1])


def message_bytes(bootstrap: str, topics: list[str]) -> int:
    """The saga messages' mean size: payload plus headers (CloudEvents, trace context), from up
    to 200 messages of each topic."""
    sizes = []
    for topic in topics:
        out = run(
            ["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-c", "200", "-f", "%S %h\n"],
            capture_output=True,
        ).stdout
        for line in out.splitlines():
            size, _, headers = line.partition(" ")
            if size.isdigit():
                sizes.append(int(size) + len(headers))
    return round(sum(sizes) / len(sizes)) if sizes else 512


def broker_ceiling(messages: int, size: int, work: Path) -> dict:
    """Produce then consume `messages` of `size` bytes with kcat on a broker process of its
    own (the saga's broker keeps serving nobody meanwhile, but shares nothing with this)."""
    address_file = work / "ceiling-broker-address"
    broker = Process(
        "ceiling-broker",
        [str(BIN / "mock-broker"), "--address-file", str(address_file)],
        {"KAFKA_PARTITIONS": "8", "TOPIC_PREFIX": "ceiling."},
    )
    try:
        deadline = time.time() + 30
        while not address_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        return kcat_rates(address_file.read_text().strip(), "ceiling.orders.events", messages, size, work)
    finally:
        broker.stop()


def kcat_rates(bootstrap: str, topic: str, messages: int, size: int, work: Path) -> dict:
    payload = work / "messages.txt"
    body = "x" * max(1, size)
    payload.write_text("".join(f"{i:010d}{body[10:]}\n" for i in range(messages)))
    started = time.perf_counter()
    run(["kcat", "-b", bootstrap, "-P", "-t", topic, "-X", "linger.ms=5", "-l", str(payload)])
    produce = time.perf_counter() - started
    started = time.perf_counter()
    consumed = run(
        ["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o\n"], capture_output=True
    ).stdout.count("\n")
    consume = time.perf_counter() - started
    return {
        "message_bytes": size,
        "messages": messages,
        "produce_per_sec": round(messages / produce),
        "consumed": consumed,
        "consume_per_sec": round(consumed / consume),
    }


def build(profile: str) -> None:
    log(f"building the {profile} binaries")
    cmd = ["cargo", "build", "--locked", "--bins", "-p", "shared", "-p", "saga", "-p", "sagactl"]
    if profile == "release":
        cmd.append("--release")
    for s in SERVICES:
        cmd += ["-p", s]
    run(cmd, cwd=ROOT)


def start_broker(address_file: Path, prefix: str) -> tuple[Process, str]:
    """The mock-cluster broker as a process of its own, with the saga's topics under `prefix`;
    returns it and its bootstrap address."""
    broker = Process(
        "mock-broker",
        [str(BIN / "mock-broker"), "--address-file", str(address_file)],
        {"KAFKA_PARTITIONS": "8", "TOPIC_PREFIX": prefix},
    )
    deadline = time.time() + 30
    while not address_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    return broker, address_file.read_text().strip()


def service_env(database_url: str, bootstrap: str, prefix: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "DATABASE_MAX_CONNECTIONS": str(POOL),
        "KAFKA_BROKERS": bootstrap,
        "KAFKA_CREATE_TOPICS": "false",
        "KAFKA_PARTITIONS": "8",
        "TOPIC_PREFIX": prefix,
        "HTTP_ADDR": "127.0.0.1:0",
        "SAGA_DEADLINE_MS": "120000",
        "RUST_LOG": "warn,shared::http_server=info",
        "LOG_FORMAT": "json",
        **API_ENV,
    }


def accept_isolation(profile: dict, work: Path, admin_url: str, run_id: str) -> dict:
    """The accept path alone: order-svc with its broker process and its PostgreSQL database,
    no other service, so that nothing but `POST /orders` (and order-svc publishing
    OrderPlaced) shares the machine. The orders stay open (nobody answers them); their
    deadline is an hour away so that no cancellation runs during the steps."""
    pg = Postgres(admin_url, run_id)
    svc = broker = None
    try:
        prefix = f"bench{run_id}iso."
        broker, bootstrap = start_broker(work / "iso-broker-address", prefix)
        db = pg.create("iso-order-svc")
        # No bound on open sagas either: with no saga behind it every order stays open, and
        # admission control would refuse all but the first thousand.
        env = {
            **service_env(pg.url(db), bootstrap, prefix),
            "SAGA_DEADLINE_MS": ISOLATION_DEADLINE_MS,
            "ORDER_API_MAX_OPEN_SAGAS": "0",
        }
        svc = Process("order-svc", [str(BIN / "order-svc")], env, ("api", "ops"))
        listeners = svc.wait_listening()
        base = f"http://{listeners['ops']}"
        wait_ready(base)
        api = f"http://{listeners['api']}"
        meter = Meter({"order-svc": svc.proc.pid, "broker": broker.proc.pid}, postmaster_pid(admin_url), [db])
        stats = DbStats(pg, [db], home="iso-stats")
        log(f"accept path alone: order-svc {api}, broker {bootstrap}")
        load(api, 20, 3, work / "iso-warmup.json", wait=0)
        # Rest, here: OrderPlaced all published (the orders themselves stay open).
        gauges = ("saga_outbox_backlog_messages", "saga_consumer_lag_messages")
        steps = []
        for rate in profile["accept_rates"]:
            left = drain([base], gauges=gauges)
            if left:
                log(f"accept alone: {left} messages still queued from the previous step")
            report, figures = measured_load(
                api, rate, profile["step_secs"], work / f"iso-{rate}.json", 0, meter, stats, per="order"
            )
            s = {**accept_summary(rate, report), **figures}
            steps.append(s)
            log(
                f"accept alone {rate}/s: accepted {s['accepted_per_sec']}/s error rate {s['error_rate']} "
                f"http p50/p99/p99.9 {s['http_ms']['p50']}/{s['http_ms']['p99']}/{s['http_ms']['p99_9']} ms; "
                f"{cpu_line(s, 'order')}"
            )
            if overloaded(s):
                log(f"accept alone: overloaded at {rate}/s, no further step")
                break
        return {
            "steps": steps,
            "accept_max_per_sec": max((s["offered_per_sec"] for s in steps if s["accept_ok"]), default=0),
            "db_source": stats.source,
            "postgres_cpu": "measured" if meter.postmaster else "not on this machine",
            "peak_rss_mb": {"order-svc": svc.peak_rss_mb(), "broker": broker.peak_rss_mb()},
        }
    finally:
        if svc:
            svc.stop()
        if broker:
            broker.stop()
        pg.drop_all()


def production(profile: dict, work: Path, admin_url: str, run_id: str) -> dict:
    pg = Postgres(admin_url, run_id)
    procs: dict[str, Process] = {}
    broker = None
    try:
        prefix = f"bench{run_id}."
        broker, bootstrap = start_broker(work / "broker-address", prefix)
        for svc in SERVICES:
            db = pg.create(svc)
            expect = ("api", "ops") if svc == "order-svc" else ("ops",)
            procs[svc] = Process(svc, [str(BIN / svc)], service_env(pg.url(db), bootstrap, prefix), expect)
        listeners = {svc: p.wait_listening() for svc, p in procs.items()}
        # Every service's ops endpoints (order-svc's are on their own port): readiness, metrics.
        bases = {svc: f"http://{addrs['ops']}" for svc, addrs in listeners.items()}
        for base in bases.values():
            wait_ready(base)
        api = f"http://{listeners['order-svc']['api']}"
        log(f"production topology up: broker {bootstrap}, order API {api}")
        meter = Meter(
            {**{svc: p.proc.pid for svc, p in procs.items()}, "broker": broker.proc.pid}, postmaster_pid(admin_url), pg.names
        )
        stats = DbStats(pg, list(pg.names))
        load(api, 20, 3, work / "warmup.json", wait=60)

        # Latency at low load, first: on a fresh topology, before the steps leave a larger
        # database and autovacuum work behind.
        drain(list(bases.values()))
        report, figures = measured_load(
            api, LOW_LOAD_RATE, profile["low_load_secs"], work / "low-load.json", 60, meter, stats
        )
        low_load = {**step_summary(LOW_LOAD_RATE, profile["low_load_secs"], report), **figures}
        log(f"low load {LOW_LOAD_RATE}/s: placed->terminal p50/p99 {low_load['saga_ms']['p50']}/{low_load['saga_ms']['p99']} ms; {cpu_line(low_load)}")

        steps = stepped(api, list(bases.values()), profile["rates"], profile["step_secs"], work, "step", meter, stats)
        accept_max = max((s["offered_per_sec"] for s in steps if s["accept_ok"]), default=0)
        sustainable = [s for s in steps if s["saga_sustainable"]]
        saga_max = max((s["finished_per_sec"] for s in sustainable), default=0.0)

        latency_rate = min(1000.0, round(0.7 * saga_max)) if saga_max else profile["rates"][0]
        drain(list(bases.values()))
        commits_before = pg.write_transactions()
        published_before = sum(metric_sum(b, "saga_outbox_published_total") for b in bases.values())
        report, figures = measured_load(api, latency_rate, profile["latency_secs"], work / "latency.json", 120, meter, stats)
        sagas = report.get("finished", 0)
        commits = pg.write_transactions() - commits_before - 1
        published = sum(metric_sum(b, "saga_outbox_published_total") for b in bases.values()) - published_before
        latency = {**step_summary(latency_rate, profile["latency_secs"], report), **figures}
        log(f"latency at {latency_rate}/s: saga p50/p99/p99.9 {latency['saga_ms']}; {cpu_line(latency)}")

        overload = overload_and_recovery(api, list(bases.values()), saga_max, latency_rate, profile, work, meter, stats)

        rss = {svc: p.peak_rss_mb() for svc, p in procs.items()}
        broker_rss = broker.peak_rss_mb()
        commits_per_saga = commits / sagas if sagas else None
        messages_per_saga = published / sagas if sagas else None

        pg_tps = pgbench(pg, profile["pgbench_secs"], POOL * len(SERVICES))
        log(f"pgbench one-row insert: {pg_tps:.0f} commits/s at {POOL * len(SERVICES)} clients")
        topics = [f"{prefix}{t}.events" for t in ("orders", "inventory", "payments", "shipping", "notifications")]
        ceiling_broker = broker_ceiling(profile["broker_messages"], message_bytes(bootstrap, topics), work)
        log(f"broker: {ceiling_broker}")
        ratio = None
        if commits_per_saga and pg_tps:
            ratio = round(saga_max / (pg_tps / commits_per_saga), 3)
        return {
            "steps": steps,
            "accept_max_per_sec": accept_max,
            "saga_max_per_sec": saga_max,
            "latency": latency,
            "commits_per_saga": round(commits_per_saga, 2) if commits_per_saga else None,
            "kafka_messages_per_saga": round(messages_per_saga, 2) if messages_per_saga else None,
            "ceiling": {
                "postgres_commits_per_sec": round(pg_tps),
                "pgbench_clients": POOL * len(SERVICES),
                "broker": ceiling_broker,
                "ratio": ratio,
            },
            "peak_rss_mb": rss,
            "broker_peak_rss_mb": broker_rss,
            "low_load_latency": low_load,
            "overload": overload,
            "db_source": stats.source,
            "postgres_cpu": "measured" if meter.postmaster else "not on this machine",
        }
    finally:
        for p in procs.values():
            p.stop()
        if broker:
            broker.stop()
        pg.drop_all()


def time_to_rest(bases: list[str], timeout: float = 180) -> float | None:
    """Seconds until nothing is left in flight (no open order, no outbox backlog, no lag), read
    every half second; None when it is not at rest within `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if backlog(bases) == 0:
            return round(time.monotonic() - started, 1)
        time.sleep(0.5)
    return None


def overload_and_recovery(
    api: str, bases: list[str], saga_max: float, after_rate: float, profile: dict, work: Path,
    meter: Meter | None, db: DbStats | None,
) -> dict:
    """Offer OVERLOAD_FACTOR x the highest sustained rate for a step: goodput is the sagas
    completed per second meanwhile (admission control refuses what would only queue), against
    that maximum. Then how long until nothing is left in flight, and a step at `after_rate` (the
    latency phase's rate) from there, whose latency says the system is back to normal."""
    if not saga_max:
        return {}
    drain(bases)
    rate = round(OVERLOAD_FACTOR * saga_max)
    report, figures = measured_load(api, rate, profile["step_secs"], work / "overload.json", 60, meter, db)
    step = {**step_summary(rate, profile["step_secs"], report), **figures}
    step["error_kinds"] = report.get("errors") or {}
    goodput = report.get("completed_per_sec") or 0.0
    rest = time_to_rest(bases)
    log(
        f"overload {rate}/s ({OVERLOAD_FACTOR}x {saga_max}/s): completed {goodput}/s "
        f"({round(100 * goodput / saga_max)} % of the maximum), answers {step['error_kinds']}, "
        f"saga p99 {step['saga_ms']['p99']} ms; at rest {rest} s after the last order finished"
    )
    after, after_figures = measured_load(api, after_rate, profile["step_secs"], work / "after-overload.json", 60, meter, db)
    after_step = {**step_summary(after_rate, profile["step_secs"], after), **after_figures}
    log(
        f"after the overload, {after_rate}/s: saga p50/p99 {after_step['saga_ms']['p50']}/{after_step['saga_ms']['p99']} ms "
        f"sustainable={after_step['saga_sustainable']}"
    )
    return {
        "factor": OVERLOAD_FACTOR,
        "offered_per_sec": rate,
        "step": step,
        "goodput_per_sec": goodput,
        "goodput_share_of_max": round(goodput / saga_max, 3),
        "seconds_to_rest": rest,
        "after": after_step,
    }


def embedded(profile: dict, work: Path) -> dict:
    data = work / "embedded"
    data.mkdir()
    saga = Process(
        "saga",
        [str(BIN / "saga"), "--data-dir", str(data), "--addr", "127.0.0.1:0"],
        {"RUST_LOG": "warn,shared::http_server=info", "LOG_FORMAT": "json", **API_ENV},
    )
    try:
        api = "http://" + saga.wait_line(r"order API\s+http://([^/\s]+)/orders").group(1)
        metrics = re.findall(r"(http://[^/\s]+)/metrics", saga.wait_line(r"^\s+metrics\s+.*").group(0))
        wait_ready(saga.wait_line(r"^\s+health\s+.*(http://[^/\s]+)/readyz").group(1))
        log(f"embedded system up: {api}")
        load(api, 20, 3, work / "embedded-warmup.json", wait=60)
        meter = Meter({"saga": saga.proc.pid})
        steps = stepped(api, metrics, profile["embedded_rates"], profile["step_secs"], work, "embedded", meter)
        sustainable = [s for s in steps if s["saga_sustainable"]]
        return {
            "steps": steps,
            "saga_max_per_sec": max((s["finished_per_sec"] for s in sustainable), default=0.0),
            "peak_rss_mb": saga.peak_rss_mb(),
        }
    finally:
        saga.stop()


# --- Charts -----------------------------------------------------------------------------------


def previous_result(results_dir: Path, profile: str, exclude: Path | None = None) -> Path | None:
    """The newest result file of `profile` in `results_dir` (by its recorded date, then its
    modification time), other than `exclude`: the curve to compare with."""
    found = []
    for path in results_dir.glob("*.json"):
        if exclude is not None and path.resolve() == exclude.resolve():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("profile") == profile:
            found.append((str(data.get("date", "")), path.stat().st_mtime, str(path)))
    return Path(max(found)[2]) if found else None


def _points(steps: list[dict] | None, get) -> list[tuple[float, object]]:
    out = []
    for step in steps or []:
        try:
            y = get(step)
        except (KeyError, TypeError):
            y = None
        if y is not None:
            out.append((step["offered_per_sec"], y))
    return out


def _without_total(by: dict | None) -> dict | None:
    return {g: v for g, v in by.items() if g != "total"} if by else None


def chart_series(result: dict) -> dict[str, dict[str, list]]:
    """What the charts draw, from a result file: (offered per second, figure) points per curve.
    Older result files lack some figures; their curves are empty."""
    p = result.get("production") or {}
    e = result.get("embedded") or {}
    a = result.get("accept_isolation") or {}
    low = p.get("low_load_latency")
    return {
        "goodput": {
            "sagas finished/s, production": _points(p.get("steps"), lambda s: s["finished_per_sec"]),
            "sagas completed/s, production at 3x its maximum": _points(
                [p["overload"]["step"]] if p.get("overload") else None, lambda s: s["completed_per_sec"]
            ),
            "sagas finished/s, embedded": _points(e.get("steps"), lambda s: s["finished_per_sec"]),
            "POST accepted/s, accept path alone": _points(a.get("steps"), lambda s: s["accepted_per_sec"]),
        },
        "post_p99": {
            "production": _points(p.get("steps"), lambda s: s["http_ms"]["p99"]),
            "accept path alone": _points(a.get("steps"), lambda s: s["http_ms"]["p99"]),
            "embedded": _points(e.get("steps"), lambda s: s["http_ms"]["p99"]),
        },
        "saga_p99": {
            "production": _points(p.get("steps"), lambda s: s["saga_ms"]["p99"]),
            "embedded": _points(e.get("steps"), lambda s: s["saga_ms"]["p99"]),
            "production, low load": _points([low] if low else [], lambda s: s["saga_ms"]["p99"]),
        },
        "cpu": {
            "production: CPU ms per saga": _points(p.get("steps"), lambda s: _without_total(s["cpu_ms_per_saga"])),
            "accept path alone: CPU ms per order": _points(
                a.get("steps"), lambda s: _without_total(s["cpu_ms_per_order"])
            ),
        },
        "cpu_total": {
            "production: CPU ms per saga": _points(p.get("steps"), lambda s: s["cpu_ms_per_saga"]["total"]),
            "accept path alone: CPU ms per order": _points(a.get("steps"), lambda s: s["cpu_ms_per_order"]["total"]),
        },
    }


def run_label(result: dict) -> str:
    return f"{str(result.get('date', '?'))[:10]}, {result.get('commit') or '?'}"


def draw_charts(result: dict, previous: dict | None, stem: Path) -> list[Path]:
    """Three SVG files beside the result: <stem>-goodput.svg, -p99.svg, -cpu.svg; the previous
    run's curves dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "saga-bench"  # the same figures give the same file
    now = chart_series(result)
    before = chart_series(previous) if previous else None
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    title = f"{result.get('profile')} run {run_label(result)}" + (
        f"; dashed: previous run {run_label(previous)}" if previous else "; no previous run to compare with"
    )
    files = []

    def save(fig, kind: str) -> None:
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        path = stem.with_name(f"{stem.name}-{kind}.svg")
        fig.savefig(path, metadata={"Date": None})
        plt.close(fig)
        files.append(path)

    from matplotlib.ticker import FuncFormatter, LogFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")

    def color_of(name: str) -> str:
        # One colour per part of the run, the same in every chart ("low load" before
        # "production": the low-load point is production's too).
        for i, part in ((3, "low load"), (0, "production"), (1, "embedded"), (2, "accept path")):
            if part in name:
                return colors[i]
        return colors[4]

    def curves(ax, key: str) -> None:
        rates = set()
        for name, pts in now[key].items():
            color = color_of(name)
            if pts:
                ax.plot(*zip(*pts), marker="o", color=color, label=name)
            if before and before[key].get(name):
                ax.plot(*zip(*before[key][name]), marker=".", ls="--", color=color, alpha=0.6, label=f"{name} (previous)")
            rates |= {x for x, _ in pts}
        ax.set_xscale("log")
        if rates:
            ax.set_xticks(sorted(rates))
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.set_xlabel("offered load (orders/s)")
        ax.grid(True, which="both", alpha=0.3)

    def log_y(ax) -> None:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
        # Values between the decades too when the axis spans only a few.
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        ax.tick_params(axis="y", which="minor", labelsize=7)

    def legend(ax) -> None:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)

    fig, ax = plt.subplots(figsize=(8, 5.5))
    curves(ax, "goodput")
    xs = [x for pts in now["goodput"].values() for x, _ in pts]
    if xs:
        ax.plot([min(xs), max(xs)], [min(xs), max(xs)], color="grey", ls=":", label="goodput = offered")
    log_y(ax)
    ax.set_ylabel("goodput (per second)")
    ax.set_title("Goodput against offered load", fontsize=10)
    legend(ax)
    save(fig, "goodput")

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.5))
    curves(left, "post_p99")
    left.axhline(ACCEPT_P99_MS, color="grey", ls=":", label=f"{ACCEPT_P99_MS:g} ms target")
    log_y(left)
    left.set_ylabel("POST /orders p99 (ms)")
    left.set_title("POST /orders p99", fontsize=10)
    legend(left)
    curves(right, "saga_p99")
    right.axhline(SAGA_P99_BOUND_MS, color="grey", ls=":", label=f"{SAGA_P99_BOUND_MS:g} ms sustainability bound")
    log_y(right)
    right.set_ylabel("placed→terminal p99 (ms)")
    right.set_title("placed→terminal p99", fontsize=10)
    legend(right)
    save(fig, "p99")

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ax, (name, pts) in zip(axes, now["cpu"].items()):
        prev_total = before["cpu_total"].get(name, []) if before else []
        rates = sorted({x for x, _ in pts} | {x for x, _ in prev_total})
        where = {r: i for i, r in enumerate(rates)}
        groups = list(dict.fromkeys(g for _, by in pts for g in by))
        # A process keeps its colour in both panels.
        order = [*SERVICES, "broker", "postgres", "load-generator", "saga"]
        bottom = [0.0] * len(pts)
        for group in groups:
            color = colors[(order.index(group) if group in order else len(order)) % len(colors)]
            heights = [by.get(group, 0.0) for _, by in pts]
            ax.bar([where[x] for x, _ in pts], heights, bottom=bottom, color=color, label=group, width=0.6)
            bottom = [b + h for b, h in zip(bottom, heights)]
        if prev_total:
            ax.plot([where[x] for x, _ in prev_total], [y for _, y in prev_total], "k--", marker="x", label="previous run, total")
        ax.set_xticks(range(len(rates)), [f"{r:g}" for r in rates])
        ax.set_xlabel("offered load (orders/s)")
        ax.set_ylabel(name.split(": ")[1])
        ax.set_title(name, fontsize=10)
        if not pts:
            ax.text(0.5, 0.5, "no CPU figures in this run", ha="center", transform=ax.transAxes)
        ax.grid(True, axis="y", alpha=0.3)
        legend(ax)
    save(fig, "cpu")
    return files


def chart_python() -> Path:
    """The venv's python with bench/requirements.txt installed (pinned by hash): created on
    first use and again whenever that file changes."""
    stamp = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    py = VENV / "bin/python"
    marker = VENV / ".requirements"
    if py.exists() and marker.is_file() and marker.read_text().strip() == stamp:
        return py
    log(f"installing the charts' packages into {VENV} (bench/requirements.txt)")
    shutil.rmtree(VENV, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(VENV)], capture_output=True)
    run(
        [
            str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--require-hashes",
            "--no-deps", "--only-binary=:all:", "-r", str(REQUIREMENTS),
        ],
        capture_output=True, timeout=900,
    )
    marker.write_text(stamp + "\n")
    return py


def charts(out: Path, compare: Path | None) -> dict:
    """Draw the charts beside `out` in the venv's python; what was drawn, or why nothing was
    (the result file stands without them)."""
    try:
        py = chart_python()
        cmd = [str(py), str(Path(__file__).resolve()), "--draw-charts", str(out)]
        if compare:
            cmd += ["--compare", str(compare)]
        done = run(cmd, capture_output=True, timeout=300, env={**os.environ, "MPLCONFIGDIR": str(VENV / "mplconfig")})
        files = json.loads(done.stdout.strip().splitlines()[-1])
        return {"files": files, "compared_with": str(compare) if compare else None}
    except subprocess.CalledProcessError as err:
        detail = (err.stderr or err.stdout or "").strip().splitlines()[-3:]
        return {"error": f"{' '.join(map(str, err.cmd[:4]))} failed: {' | '.join(detail)}"}
    except Exception as err:  # noqa: BLE001 - charts are optional; the run's figures are not
        return {"error": f"{type(err).__name__}: {err}"}


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?")
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    pg_version = run(["psql", os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"), "-qAtc", "SHOW server_version"], capture_output=True).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "postgres": pg_version,
        "rustc": run(["rustc", "--version"], capture_output=True).stdout.strip(),
    }


def git_commit() -> str | None:
    """The checkout's commit (with "-dirty" when it has uncommitted changes), if it is a git one."""
    try:
        head = run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True).stdout.strip()
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--skip-build", action="store_true", help="use the binaries as they are")
    parser.add_argument(
        "--build", choices=["release", "debug"], default="release",
        help="debug: a smoke run of the harness on the test build (its figures mean nothing)",
    )
    parser.add_argument(
        "--bin-dir", type=Path,
        help="run these prebuilt binaries instead (implies --skip-build): a before/after comparison on one machine",
    )
    parser.add_argument("--bin-commit", help="with --bin-dir: the commit those binaries were built from (recorded)")
    parser.add_argument("--rates", help="override the profile's production steps, e.g. 100,200,400 (exploration)")
    parser.add_argument("--embedded-rates", help="override the profile's embedded steps (exploration)")
    parser.add_argument("--accept-rates", help="override the profile's accept-path-alone steps (exploration)")
    parser.add_argument(
        "--compare", type=Path,
        help="draw this result file's curves for comparison (default: the newest other result of the profile in bench/results)",
    )
    parser.add_argument("--no-charts", action="store_true", help="write the JSON only")
    # Internal: draw the charts of a result file (run in the charts' venv by `charts`).
    parser.add_argument("--draw-charts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.draw_charts:
        result = json.loads(args.draw_charts.read_text())
        previous = json.loads(args.compare.read_text()) if args.compare else None
        files = draw_charts(result, previous, args.draw_charts.with_suffix(""))
        print(json.dumps([f.name for f in files]))
        return 0
    global BIN
    BIN = args.bin_dir.resolve() if args.bin_dir else ROOT / "target" / args.build
    # Prebuilt binaries from a cargo target directory say what build they are by its name.
    build_kind = BIN.name if args.bin_dir and BIN.name in ("debug", "release") else args.build
    profile = dict(PROFILES[args.profile])
    if args.rates:
        profile["rates"] = [float(r) for r in args.rates.split(",")]
    if args.embedded_rates:
        profile["embedded_rates"] = [float(r) for r in args.embedded_rates.split(",")]
    if args.accept_rates:
        profile["accept_rates"] = [float(r) for r in args.accept_rates.split(",")]
    admin_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    # Fail before the build and the load steps, not in the middle of the run.
    missing = [tool for tool in ("psql", "kcat") if not shutil.which(tool)]
    if not shutil.which("pgbench") and not list(Path("/usr/lib/postgresql").glob("*/bin/pgbench")):
        missing.append("pgbench")
    if missing:
        print(f"missing {', '.join(missing)}: apt-get install postgresql-client postgresql-contrib kcat", file=sys.stderr)
        return 2
    # Tuning variables the services read, when set for this run (they change what is measured).
    overrides = {k: v for k, v in sorted(os.environ.items()) if k.startswith(("CONSUMER_", "OUTBOX_"))}
    if not args.skip_build and not args.bin_dir:
        build(args.build)
    started = dt.datetime.now(dt.timezone.utc)
    run_id = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
        work = Path(tmp)
        result = {
            "date": started.isoformat(timespec="seconds"),
            "profile": args.profile,
            "command": "".join(f"{k}={v} " for k, v in overrides.items())
            + "python3 bench/bench.py --profile " + args.profile + ("" if args.build == "release" else " --build debug")
            + (f" --bin-dir {args.bin_dir}" if args.bin_dir else "")
            + (f" --bin-commit {args.bin_commit}" if args.bin_commit else "")
            + (f" --compare {args.compare}" if args.compare else ""),
            "build": build_kind,
            "commit": (args.bin_commit or f"binaries from {args.bin_dir}") if args.bin_dir else git_commit(),
            "service_environment": overrides,
            "machine": machine(),
            # First, while PostgreSQL holds none of this run's data yet.
            "accept_isolation": accept_isolation(profile, work, admin_url, run_id),
            "production": production(profile, work, admin_url, run_id),
            "embedded": embedded(profile, work),
        }
    result["duration_secs"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds())
    out = args.out or ROOT / "bench/results" / f"{started:%Y-%m-%d}-{args.profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_charts:
        compare = args.compare or previous_result(ROOT / "bench/results", args.profile, exclude=out)
        result["charts"] = charts(out, compare)
        out.write_text(json.dumps(result, indent=2) + "\n")
    p, e, a = result["production"], result["embedded"], result["accept_isolation"]
    print(f"accept path: max {p['accept_max_per_sec']} POST/s with p99 <= {ACCEPT_P99_MS} ms and no errors")
    print(f"saga: max {p['saga_max_per_sec']} sagas/s; at {p['latency']['offered_per_sec']}/s placed->terminal {p['latency']['saga_ms']}")
    print(f"per saga: {p['commits_per_saga']} database commits, {p['kafka_messages_per_saga']} Kafka messages")
    print(f"ceiling: {p['ceiling']}")
    print(f"peak RSS (MB): {p['peak_rss_mb']}, broker {p['broker_peak_rss_mb']}")
    print(f"embedded: max {e['saga_max_per_sec']} sagas/s, peak RSS {e['peak_rss_mb']} MB")
    low = p["low_load_latency"]
    print(f"low load, {low['offered_per_sec']}/s: placed->terminal p50 {low['saga_ms']['p50']} ms, p99 {low['saga_ms']['p99']} ms")
    over = p.get("overload")
    if over:
        after = over["after"]
        print(
            f"overload {over['offered_per_sec']}/s ({over['factor']}x the maximum): completed {over['goodput_per_sec']}/s "
            f"({over['goodput_share_of_max']:.0%} of the maximum), answers {over['step']['error_kinds']}; at rest "
            f"{over['seconds_to_rest']} s later; then {after['offered_per_sec']}/s: placed->terminal p50/p99 "
            f"{after['saga_ms']['p50']}/{after['saga_ms']['p99']} ms, sustainable={after['saga_sustainable']}"
        )
    print(f"where the time goes (postgres: {p['postgres_cpu']}; statements from {p['db_source']}):")
    for s in p["steps"]:
        print(f"  production {s['offered_per_sec']}/s: {cpu_line(s)}; machine busy {s.get('machine_cpu_utilisation')}")
    print(f"  latency phase {p['latency']['offered_per_sec']}/s: {cpu_line(p['latency'])}")
    for s in e["steps"]:
        print(f"  embedded {s['offered_per_sec']}/s: {cpu_line(s)}")
    print(f"accept path alone (order-svc, broker, PostgreSQL): max {a['accept_max_per_sec']} POST/s with p99 <= {ACCEPT_P99_MS} ms and no errors")
    for s in a["steps"]:
        h = s["http_ms"]
        print(
            f"  {s['offered_per_sec']}/s: accepted {s['accepted_per_sec']}/s, error rate {s['error_rate']}, "
            f"p50/p99/p99.9 {h['p50']}/{h['p99']}/{h['p99_9']} ms; {cpu_line(s, 'order')}"
        )
    drawn = result.get("charts")
    if drawn and drawn.get("files"):
        print(f"charts: {', '.join(drawn['files'])} beside the result" + (f" (compared with {drawn['compared_with']})" if drawn["compared_with"] else " (no previous run to compare with)"))
    elif drawn:
        print(f"charts not drawn: {drawn['error']}")
    if build_kind == "debug":
        print("debug binaries: these figures test the harness, they say nothing about speed")
    print(f"result written to {out}")
    # Speed is not judged here, but a run in which nothing went through did not measure anything.
    if not p["steps"] or not p["steps"][0]["finished"] or not e["steps"] or not e["steps"][0]["finished"]:
        print("the benchmark did not get any saga through", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
