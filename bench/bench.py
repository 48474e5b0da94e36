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
- the embedded mode (one process, SQLite, in-process mock cluster): the same saga steps.

Results go to a JSON file (--out, default bench/results/<date>-<profile>.json) and a summary
is printed. Speed is never asserted: the exit code says only whether the benchmark ran.
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
    },
}


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
    """One `sagactl load` step; returns its JSON report."""
    cmd = [
        str(BIN / "sagactl"), "load",
        "--api-url", api, "--rate", str(rate), "--duration", f"{secs}s",
        "--mix", "completed=100", "--wait-timeout", f"{int(wait)}s", "--out", str(out),
        "--max-in-flight", "4096",
    ]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "SAGA_API_KEY": API_KEY})
    return json.loads(out.read_text())


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


def backlog(bases: list[str]) -> float:
    """Orders not terminal yet, outbox rows not yet published and consumer lag, over every
    service."""
    return sum(
        metric_sum(b, "saga_orders_open")
        + metric_sum(b, "saga_outbox_backlog_messages")
        + metric_sum(b, "saga_consumer_lag_messages")
        for b in bases
    )


def drain(bases: list[str], timeout: float = 180) -> float:
    """Wait until the previous step's work is done, so that each step starts from rest. The
    gauges are sampled (open orders every second, lag and backlog every few seconds), so rest
    is three zero readings in a row, 2 s apart."""
    deadline = time.time() + timeout
    quiet = 0
    left = backlog(bases)
    while time.time() < deadline:
        quiet = quiet + 1 if left == 0 else 0
        if quiet >= 3:
            return 0
        time.sleep(2)
        left = backlog(bases)
    return left


def stepped(api: str, bases: list[str], rates: list[float], secs: float, work: Path, tag: str) -> list[dict]:
    steps = []
    for rate in rates:
        left = drain(bases)
        if left:
            log(f"{tag}: {left} messages still queued from the previous step")
        report = load(api, rate, secs, work / f"{tag}-{rate}.json", wait=max(10, secs))
        s = step_summary(rate, secs, report)
        steps.append(s)
        log(
            f"{tag} {rate}/s: accepted {s['accepted_per_sec']}/s errors {s['errors']} http p50/p99/p99.9 "
            f"{s['http_ms']['p50']}/{s['http_ms']['p99']}/{s['http_ms']['p99_9']} ms; finished {s['finished_per_sec']}/s "
            f"saga p99 {s['saga_ms']['p99']} ms sustainable={s['saga_sustainable']}"
        )
        if not s["accept_ok"] and not s["saga_sustainable"]:
            break
    return steps


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


def production(profile: dict, work: Path, admin_url: str, run_id: str) -> dict:
    pg = Postgres(admin_url, run_id)
    procs: dict[str, Process] = {}
    broker = None
    try:
        prefix = f"bench{run_id}."
        address_file = work / "broker-address"
        broker = Process(
            "mock-broker",
            [str(BIN / "mock-broker"), "--address-file", str(address_file)],
            {"KAFKA_PARTITIONS": "8", "TOPIC_PREFIX": prefix},
        )
        deadline = time.time() + 30
        while not address_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        bootstrap = address_file.read_text().strip()
        for svc in SERVICES:
            db = pg.create(svc)
            env = {
                "DATABASE_URL": pg.url(db),
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
            expect = ("api", "ops") if svc == "order-svc" else ("ops",)
            procs[svc] = Process(svc, [str(BIN / svc)], env, expect)
        listeners = {svc: p.wait_listening() for svc, p in procs.items()}
        # Every service's ops endpoints (order-svc's are on their own port): readiness, metrics.
        bases = {svc: f"http://{addrs['ops']}" for svc, addrs in listeners.items()}
        for base in bases.values():
            wait_ready(base)
        api = f"http://{listeners['order-svc']['api']}"
        log(f"production topology up: broker {bootstrap}, order API {api}")
        load(api, 20, 3, work / "warmup.json", wait=60)

        steps = stepped(api, list(bases.values()), profile["rates"], profile["step_secs"], work, "step")
        accept_max = max((s["offered_per_sec"] for s in steps if s["accept_ok"]), default=0)
        sustainable = [s for s in steps if s["saga_sustainable"]]
        saga_max = max((s["finished_per_sec"] for s in sustainable), default=0.0)

        latency_rate = min(1000.0, round(0.7 * saga_max)) if saga_max else profile["rates"][0]
        drain(list(bases.values()))
        commits_before = pg.write_transactions()
        published_before = sum(metric_sum(b, "saga_outbox_published_total") for b in bases.values())
        report = load(api, latency_rate, profile["latency_secs"], work / "latency.json", wait=120)
        sagas = report.get("finished", 0)
        commits = pg.write_transactions() - commits_before - 1
        published = sum(metric_sum(b, "saga_outbox_published_total") for b in bases.values()) - published_before
        latency = step_summary(latency_rate, profile["latency_secs"], report)
        log(f"latency at {latency_rate}/s: saga p50/p99/p99.9 {latency['saga_ms']}")

        rss = {svc: p.peak_rss_mb() for svc, p in procs.items()}
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
        }
    finally:
        for p in procs.values():
            p.stop()
        if broker:
            broker.stop()
        pg.drop_all()


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
        steps = stepped(api, metrics, profile["embedded_rates"], profile["step_secs"], work, "embedded")
        sustainable = [s for s in steps if s["saga_sustainable"]]
        return {
            "steps": steps,
            "saga_max_per_sec": max((s["finished_per_sec"] for s in sustainable), default=0.0),
            "peak_rss_mb": saga.peak_rss_mb(),
        }
    finally:
        saga.stop()


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
    args = parser.parse_args()
    global BIN
    BIN = args.bin_dir.resolve() if args.bin_dir else ROOT / "target" / args.build
    profile = dict(PROFILES[args.profile])
    if args.rates:
        profile["rates"] = [float(r) for r in args.rates.split(",")]
    if args.embedded_rates:
        profile["embedded_rates"] = [float(r) for r in args.embedded_rates.split(",")]
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
            + (f" --bin-commit {args.bin_commit}" if args.bin_commit else ""),
            "build": args.build,
            "commit": (args.bin_commit or f"binaries from {args.bin_dir}") if args.bin_dir else git_commit(),
            "service_environment": overrides,
            "machine": machine(),
            "production": production(profile, work, admin_url, run_id),
            "embedded": embedded(profile, work),
        }
    result["duration_secs"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds())
    out = args.out or ROOT / "bench/results" / f"{started:%Y-%m-%d}-{args.profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    p, e = result["production"], result["embedded"]
    print(f"accept path: max {p['accept_max_per_sec']} POST/s with p99 <= {ACCEPT_P99_MS} ms and no errors")
    print(f"saga: max {p['saga_max_per_sec']} sagas/s; at {p['latency']['offered_per_sec']}/s placed->terminal {p['latency']['saga_ms']}")
    print(f"per saga: {p['commits_per_saga']} database commits, {p['kafka_messages_per_saga']} Kafka messages")
    print(f"ceiling: {p['ceiling']}")
    print(f"peak RSS (MB): {p['peak_rss_mb']}")
    print(f"embedded: max {e['saga_max_per_sec']} sagas/s, peak RSS {e['peak_rss_mb']} MB")
    print(f"result written to {out}")
    # Speed is not judged here, but a run in which nothing went through did not measure anything.
    if not p["steps"] or not p["steps"][0]["finished"] or not e["steps"] or not e["steps"][0]["finished"]:
        print("the benchmark did not get any saga through", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
