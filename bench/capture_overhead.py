"""Throughput of no-op tasks through a real worker, without and with the monitoring capture.

    .venv/bin/python bench/capture_overhead.py [--tasks 5000] [--rounds 3]

Each mode runs a real ``celery worker`` (prefork, concurrency 2) on Redis with PostgreSQL as the database,
in the same run and interleaved (off, on, dcr, off, on, dcr, ...), so machine noise hits every mode alike:

- ``baseline``: capture off, no result backend;
- ``jobmonitor``: capture on (publish, receive, start and outcome of every task are recorded);
- ``django-celery-results``: capture off, django-celery-results' database backend (for scale).

The queue is filled first; the clock runs from the first message consumed until the queue and the
unacked set are empty. The jobmonitor rows are checked afterwards: every task must be SUCCESS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/jm_bench_capture")
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/11")
QUEUE = "bench-capture"

MODES = {
    "baseline": {"MONITORING_CAPTURE": "0", "CELERY_RESULT_BACKEND": "disabled"},
    "jobmonitor": {"MONITORING_CAPTURE": "1", "CELERY_RESULT_BACKEND": "disabled"},
    "django-celery-results": {"MONITORING_CAPTURE": "0", "CELERY_RESULT_BACKEND": "django-db"},
}


def mode_env(mode: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": DB_URL, "CELERY_BROKER_URL": BROKER_URL,
            "DJANGO_SETTINGS_MODULE": "jobmonitor.settings", "DJANGO_DEBUG": "0", **MODES[mode]}


def setup_database() -> None:
    import psycopg2

    name = DB_URL.rsplit("/", 1)[1]
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if not cur.fetchone():
            cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=mode_env("baseline"),
                   check=True)


def run_mode(mode: str, tasks: int) -> float:
    """Return tasks per second for one run of ``mode``."""
    import redis

    env = mode_env(mode)
    client = redis.Redis.from_url(BROKER_URL)
    client.flushdb()
    reset = ("from monitoring.models import JobRun; from django_celery_results.models import TaskResult; "
             "JobRun.objects.all().delete(); TaskResult.objects.all().delete()")
    subprocess.run([sys.executable, "manage.py", "shell", "-c", reset], cwd=ROOT, env=env, check=True)
    publish = (
        "import sys; from jobmonitor.celery import app; from monitoring import capture\n"
        f"with app.producer_or_acquire() as producer:\n"
        f"    for _ in range({tasks}):\n"
        f"        app.send_task('jobmonitor.tasks.noop', queue='{QUEUE}', producer=producer, ignore_result=True)\n"
        "capture.flush()\n"
    )
    subprocess.run([sys.executable, "manage.py", "shell", "-c", publish], cwd=ROOT, env=env, check=True)
    assert client.llen(QUEUE) == tasks, client.llen(QUEUE)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "jobmonitor", "worker", "-P", "prefork", "-c", "2", "-Q", QUEUE,
         "-l", "error", "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"bench-{mode}@%h"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while client.llen(QUEUE) == tasks:
            time.sleep(0.002)
        started = time.perf_counter()
        while client.llen(QUEUE) or client.hlen("unacked"):
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    if mode == "jobmonitor":
        check = ("from monitoring.models import JobRun; import sys; "
                 f"n = JobRun.objects.filter(state='SUCCESS', queue='{QUEUE}').count(); "
                 f"print(n); sys.exit(0 if n == {tasks} else 1)")
        done = subprocess.run([sys.executable, "manage.py", "shell", "-c", check], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"capture incomplete: {done.stdout.strip()} of {tasks} SUCCESS rows")
    return tasks / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES))
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"--modes: unknown {sorted(unknown)}; allowed: {', '.join(MODES)}")
    setup_database()
    rates: dict[str, list[float]] = {m: [] for m in modes}
    for round_no in range(1, args.rounds + 1):
        for mode in modes:
            rate = run_mode(mode, args.tasks)
            rates[mode].append(rate)
            print(f"round {round_no}: {mode:<22} {rate:8.0f} tasks/s", flush=True)
    base = statistics.median(rates["baseline"]) if "baseline" in rates else None
    print(f"\n{args.tasks} no-op tasks, prefork concurrency 2, Redis broker, PostgreSQL; median of {args.rounds}")
    print(f"{'mode':<24}{'tasks/s (median)':>18}{'runs':>30}{'vs baseline':>14}")
    for mode in modes:
        median = statistics.median(rates[mode])
        ratio = f"{median / base:.1%}" if base else "-"
        runs = ", ".join(f"{r:.0f}" for r in rates[mode])
        print(f"{mode:<24}{median:>18.0f}{runs:>30}{ratio:>14}")


if __name__ == "__main__":
    main()
