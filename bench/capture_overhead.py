"""Throughput of no-op tasks through a real worker, without and with the monitoring capture.

    .venv/bin/python bench/capture_overhead.py [--tasks 5000] [--rounds 5] [--modes baseline,jobmonitor]
    .venv/bin/python bench/capture_overhead.py --write-path [--rows 5000]

Each mode runs a real ``celery worker`` (prefork, concurrency 2) on Redis with PostgreSQL as the database:

- ``baseline``: capture off, no result backend;
- ``jobmonitor``: capture on (publish, receive, start and outcome of every task are recorded);
- ``django-celery-results``: capture off, django-celery-results' database backend (for scale).

Modes run interleaved in ABBA order (round 1: a, b; round 2: b, a; ...), so machine noise and drift hit
every mode alike, and every round gives its own paired ratio. Before each run the tables are truncated
(no dead rows, no autovacuum left over from the previous run), the queue is filled, and the table is
vacuumed and analyzed. The clock runs from the first message consumed until the queue and the unacked
set are empty; the jobmonitor rows are checked afterwards (every task must be SUCCESS).

Throughput on a shared 2-core machine moves by tens of percent between runs, so each run also reports
the CPU time its processes used per task (worker parent, pool processes, and the PostgreSQL backends of
the bench database, sampled every 0.1 s): what capture costs in CPU is far steadier than tasks/s.

``--write-path`` measures the capture's database write alone: rows/s and CPU per row (server backend and
client) of ``capture.write_rows`` as the producer (insert) and a pool process (started and succeeded
merged into one upsert of the existing row) call it, in 200-row flushes, on a copy of the JobRun table
with every index of the migrated schema.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "bench-capture"
TABLES = ("monitoring_jobrun", "django_celery_results_taskresult")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

MODES = {
    "baseline": {"MONITORING_CAPTURE": "0", "CELERY_RESULT_BACKEND": "disabled"},
    "jobmonitor": {"MONITORING_CAPTURE": "1", "CELERY_RESULT_BACKEND": "disabled"},
    "django-celery-results": {"MONITORING_CAPTURE": "0", "CELERY_RESULT_BACKEND": "django-db"},
}


@dataclass
class Run:
    mode: str
    rate: float
    cpu: dict[str, float]  # microseconds of CPU per task: parent, pool, db
    row_writes: int  # inserts + updates of monitoring_jobrun during the timed window
    autovacuums: int
    sessions: int  # database connections opened during the timed window

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu.values())


@dataclass
class Options:
    database_url: str
    broker_url: str
    tasks: int
    cpus: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def database(self) -> str:
        return self.database_url.rsplit("/", 1)[1]


def mode_env(opts: Options, mode: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": opts.database_url, "CELERY_BROKER_URL": opts.broker_url,
            "DJANGO_SETTINGS_MODULE": "jobmonitor.settings", "DJANGO_DEBUG": "0", **MODES[mode],
            **opts.extra_env}


def connect(opts: Options, database: str | None = None) -> Any:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=database or opts.database)
    conn.autocommit = True
    return conn


def setup_database(opts: Options) -> None:
    admin = connect(opts, "postgres")
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [opts.database])
        if not cur.fetchone():
            cur.execute(f'CREATE DATABASE "{opts.database}"')
    admin.close()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=mode_env(opts, "baseline"),
                   check=True)


# --- CPU accounting -------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return [int(p) for p in listing.read().split()]
    except OSError:
        return []


class CpuSampler:
    """Sample the CPU time of the worker's processes and the bench database's backends during a run.

    A process seen for the first time after the start (a new pool child, a new database connection) is
    counted from zero: its start-up is part of the cost. A backend that connects and exits between two
    samples is missed, so the database figure is a lower bound.
    """

    def __init__(self, opts: Options, worker_pid: int) -> None:
        self.worker_pid = worker_pid
        self.db = connect(opts)
        self.database = opts.database
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _backends(self) -> list[int]:
        with self.db.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                        [self.database])
            return [row[0] for row in cur.fetchall()]

    def sample(self, *, initial: bool = False) -> None:
        groups = [("parent", [self.worker_pid]), ("pool", children(self.worker_pid)), ("db", self._backends())]
        for group, pids in groups:
            for pid in pids:
                used = cpu_seconds(pid)
                if used is None:
                    continue
                self.first.setdefault(pid, used if initial else 0.0)
                self.last[pid] = (group, used)

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self.sample()

    def start(self) -> None:
        self.sample(initial=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self.sample()
        self.db.close()
        used = {"parent": 0.0, "pool": 0.0, "db": 0.0}
        for pid, (group, last) in self.last.items():
            used[group] += last - self.first[pid]
        return used


# --- one run --------------------------------------------------------------------------------------------

def table_stats(cur: Any) -> tuple[int, int, int]:
    cur.execute("SELECT n_tup_ins + n_tup_upd, autovacuum_count, (SELECT sessions FROM pg_stat_database "
                "WHERE datname = current_database()) FROM pg_stat_user_tables WHERE relname = 'monitoring_jobrun'")
    return cur.fetchone()


def run_mode(opts: Options, mode: str) -> Run:
    """Fill the queue, let one worker drain it, and return its rate and CPU use."""
    import redis

    env = mode_env(opts, mode)
    client = redis.Redis.from_url(opts.broker_url)
    client.flushdb()
    db = connect(opts)
    with db.cursor() as cur:
        cur.execute(f"TRUNCATE {', '.join(TABLES)}")
    publish = (
        "from jobmonitor.celery import app; from monitoring import capture\n"
        "with app.producer_or_acquire() as producer:\n"
        f"    for _ in range({opts.tasks}):\n"
        f"        app.send_task('jobmonitor.tasks.noop', queue='{QUEUE}', producer=producer, ignore_result=True)\n"
        "capture.flush()\n"
    )
    subprocess.run([sys.executable, "manage.py", "shell", "-c", publish], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    assert client.llen(QUEUE) == opts.tasks, client.llen(QUEUE)
    with db.cursor() as cur:
        cur.execute(f"VACUUM ANALYZE {', '.join(TABLES)}")
    command = [sys.executable, "-m", "celery", "-A", "jobmonitor", "worker", "-P", "prefork", "-c", "2",
               "-Q", QUEUE, "-l", "error", "--without-gossip", "--without-mingle", "--without-heartbeat",
               "-n", f"bench-{mode}@%h"]
    if opts.cpus:
        command = ["taskset", "-c", opts.cpus, *command]
    worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while client.llen(QUEUE) == opts.tasks:
            time.sleep(0.002)
        sampler = CpuSampler(opts, worker.pid)
        sampler.start()
        with db.cursor() as cur:
            before = table_stats(cur)
        started = time.perf_counter()
        while client.llen(QUEUE) or client.hlen("unacked"):
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        used = sampler.stop()
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    time.sleep(0.6)  # the statistics collector publishes table counters at most every 0.5 s
    with db.cursor() as cur:
        after = table_stats(cur)
        if mode == "jobmonitor":
            cur.execute("SELECT count(*) FROM monitoring_jobrun WHERE state = 'SUCCESS' AND queue = %s", [QUEUE])
            done = cur.fetchone()[0]
            if done != opts.tasks:
                raise SystemExit(f"capture incomplete: {done} of {opts.tasks} SUCCESS rows")
    db.close()
    return Run(mode, opts.tasks / elapsed, {k: v / opts.tasks * 1e6 for k, v in used.items()},
               *(a - b for a, b in zip(after, before, strict=True)))


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def report(runs: list[Run], modes: list[str], opts: Options, rounds: int) -> None:
    by_mode = {m: [r for r in runs if r.mode == m] for m in modes}
    median = {m: statistics.median(r.rate for r in by_mode[m]) for m in modes}
    base = median.get("baseline")
    print(f"\n{opts.tasks} no-op tasks, prefork concurrency 2, Redis broker, PostgreSQL; {rounds} rounds, ABBA order"
          + (f"; worker pinned to CPUs {opts.cpus}" if opts.cpus else ""))
    print(f"{'mode':<24}{'tasks/s (median)':>17}{'vs baseline':>13}   {'CPU us/task parent+pool+db = total':<38}"
          f"runs (tasks/s)")
    for mode in modes:
        rs = by_mode[mode]
        cpu = {k: statistics.median(r.cpu[k] for r in rs) for k in ("parent", "pool", "db")}
        total = statistics.median(r.cpu_total for r in rs)
        ratio = f"{median[mode] / base:.1%}" if base else "-"
        cpu_text = f"{cpu['parent']:.0f} + {cpu['pool']:.0f} + {cpu['db']:.0f} = {total:.0f}"
        print(f"{mode:<24}{median[mode]:>17.0f}{ratio:>13}   {cpu_text:<38}{', '.join(f'{r.rate:.0f}' for r in rs)}")
    if base is None:
        return
    for mode in modes:
        if mode == "baseline":
            continue
        paired = [other.rate / b.rate for b, other in zip(by_mode["baseline"], by_mode[mode], strict=True)]
        extra = [o.cpu_total - b.cpu_total for b, o in zip(by_mode["baseline"], by_mode[mode], strict=True)]
        print(f"{mode} / baseline per round: {', '.join(f'{p:.1%}' for p in paired)}; median "
              f"{statistics.median(paired):.1%}, spread {min(paired):.1%}-{max(paired):.1%}; extra CPU per task "
              f"{statistics.median(extra):.0f} us (rounds: {', '.join(f'{e:.0f}' for e in extra)})")


# --- the write path alone -------------------------------------------------------------------------------

def write_path(opts: Options, rows: int, rounds: int) -> None:
    """Rows/s and CPU per row of ``capture.write_rows`` on a copy of the JobRun table (200-row flushes)."""
    os.environ.update(mode_env(opts, "jobmonitor"))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    from monitoring import capture
    from monitoring.models import JobRun, JobState

    copy = "bench_jobrun_copy"

    def timed(batches: list[list[dict]]) -> tuple[float, float, float]:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backend = cur.fetchone()[0]
        server, client, wall = cpu_seconds(backend), time.process_time(), time.perf_counter()
        for batch in batches:
            capture.write_rows(batch)
        return (rows / (time.perf_counter() - wall), (cpu_seconds(backend) - server) / rows * 1e6,
                (time.process_time() - client) / rows * 1e6)

    results: dict[str, list[tuple[float, float, float]]] = {"insert": [], "update": []}
    table, JobRun._meta.db_table = JobRun._meta.db_table, copy  # write_rows writes to the model's table
    try:
        for _ in range(rounds):
            with connection.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {copy}; CREATE TABLE {copy} (LIKE {table} INCLUDING ALL)")
                cur.execute("SELECT count(*) FROM pg_indexes WHERE tablename = %s", [copy])
                indexes = cur.fetchone()[0]
            ids = [str(uuid.uuid4()) for _ in range(rows)]
            published = [capture.make_row(i, JobState.PENDING, task_name="jobmonitor.tasks.noop", queue=QUEUE,
                                          routing_key=QUEUE, args=[], kwargs={}, published_at=capture.now())
                         for i in ids]
            results["insert"].append(timed([published[s:s + 200] for s in range(0, rows, 200)]))
            with connection.cursor() as cur:
                cur.execute(f"VACUUM ANALYZE {copy}")
            finished = []
            for task_id in ids:
                started = capture.make_row(task_id, JobState.STARTED, task_name="jobmonitor.tasks.noop",
                                           worker="bench@host", queue=QUEUE, started_at=capture.now(), args=[],
                                           kwargs={})
                done = capture.make_row(task_id, JobState.SUCCESS, task_name="jobmonitor.tasks.noop",
                                        finished_at=capture.now(), runtime=0.0001, result="None")
                finished.append(capture._merge(started, done))
            results["update"].append(timed([finished[s:s + 200] for s in range(0, rows, 200)]))
        with connection.cursor() as cur:
            cur.execute(f"DROP TABLE {copy}")
    finally:
        JobRun._meta.db_table = table
    print(f"\ncapture.write_rows, {rows} rows in 200-row flushes, table copy with {indexes} indexes; "
          f"median of {rounds}")
    print(f"{'write':<34}{'rows/s':>10}{'server CPU us/row':>20}{'client CPU us/row':>20}")
    for name, label in (("insert", "insert (producer: PENDING)"), ("update", "upsert of existing (pool: done)")):
        rates, server, client = zip(*results[name], strict=True)
        print(f"{label:<34}{statistics.median(rates):>10.0f}{statistics.median(server):>20.0f}"
              f"{statistics.median(client):>20.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default="baseline,jobmonitor",
                        help="comma-separated subset of: " + ", ".join(MODES))
    parser.add_argument("--cpus", default="", help="run the worker under taskset -c CPUS (e.g. 0 or 0,1)")
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/jm_bench_capture"))
    parser.add_argument("--broker-url", default=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/11"))
    parser.add_argument("--write-path", action="store_true", help="measure capture.write_rows alone")
    parser.add_argument("--rows", type=int, default=5_000, help="rows per --write-path round")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"--modes: unknown {sorted(unknown)}; allowed: {', '.join(MODES)}")
    opts = Options(args.database_url, args.broker_url, args.tasks, args.cpus)
    setup_database(opts)
    print(f"load average at start: {load()}", flush=True)
    if args.write_path:
        write_path(opts, args.rows, args.rounds)
    else:
        runs: list[Run] = []
        for round_no in range(1, args.rounds + 1):
            for mode in modes if round_no % 2 else modes[::-1]:
                run = run_mode(opts, mode)
                runs.append(run)
                cpu = " + ".join(f"{run.cpu[k]:.0f}" for k in ("parent", "pool", "db"))
                print(f"round {round_no}: {mode:<22} {run.rate:6.0f} tasks/s  CPU us/task {cpu} = "
                      f"{run.cpu_total:.0f}  row writes {run.row_writes}  connections {run.sessions}  "
                      f"autovacuums {run.autovacuums}  "
                      f"load {load()}", flush=True)
        report(runs, modes, opts, args.rounds)
    print(f"load average at end: {load()}")


if __name__ == "__main__":
    main()
