"""Request metrics summed over processes (prometheus-client multiprocess mode).

- two processes record requests through ``Telemetry`` in one ``PROMETHEUS_MULTIPROC_DIR``;
  a third's ``exposition`` reports the sums;
- (slow) ``/metrics`` of ``shopcast serve --workers 2`` (real processes, real Redis, the
  SYNTHETIC simulated shop): every scrape, whichever process answers it, counts the
  requests of both.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from tests.online.conftest import free_port, prepare_shop, wait_healthy

from shopcast.simulate import SimulatedShop

HEALTH = re.compile(
    r'^shopcast_http_requests_total\{method="GET",route="/v1/health",status="200"\} (\S+)$',
    re.M,
)


def health_count(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = HEALTH.search(text)
    return float(found.group(1)) if found else 0.0


RECORD = """
import sys
from shopcast.feedback.prometheus import Telemetry
t = Telemetry()
for _ in range(int(sys.argv[1])):
    t.observe("GET", "/v1/health", 200, 0.003)
t.observe("POST", "/v1/events", 202, 0.02)
"""
EXPOSE = """
import sys
from shopcast.feedback.prometheus import Telemetry
sys.stdout.write(Telemetry().exposition().decode())
"""


def test_exposition_sums_the_processes_of_one_directory(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in (3, 5):  # two processes, two pids
        subprocess.run([sys.executable, "-c", RECORD, str(n)], env=env, check=True, timeout=60)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2
    text = subprocess.run(
        [sys.executable, "-c", EXPOSE], env=env, check=True, timeout=60, capture_output=True
    ).stdout.decode()
    found = HEALTH.search(text)
    assert found is not None and float(found.group(1)) == 8.0, text
    assert 'shopcast_http_requests_total{method="POST",route="/v1/events",status="202"} 2.0' in text
    hist = 'shopcast_http_request_duration_seconds_count{method="GET",route="/v1/health"} 8.0'
    assert hist in text
    alone = subprocess.run(  # without the directory: this process's own counters only
        [sys.executable, "-c", EXPOSE],
        env={k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        check=True,
        timeout=60,
        capture_output=True,
    ).stdout.decode()
    assert HEALTH.search(alone) is None


@pytest.mark.slow
def test_metrics_sum_over_worker_processes(
    redis_url: str, tmp_path: Path, small_shop: SimulatedShop
) -> None:
    settings = prepare_shop(tmp_path, small_shop)
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # an earlier run's: removed at start
    env = {
        **os.environ,
        "SHOPCAST_DATABASE_URL": settings.database_url,
        "SHOPCAST_MODEL_DIR": str(settings.model_dir),
        "SHOPCAST_STATE__URL": redis_url,
        "SHOPCAST_AUTH__ENABLED": "false",
        "SHOPCAST_ENVIRONMENT": "test",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "OPENBLAS_NUM_THREADS": "1",
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "shopcast.cli", "serve", "--workers", "2", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, proc, log)
        sent = 1  # wait_healthy's last probe
        with ThreadPoolExecutor(8) as pool:  # new connections, spread over the processes
            for _ in range(10):
                codes = list(
                    pool.map(lambda _: httpx.get(f"{url}/v1/health").status_code, range(16))
                )
                assert codes == [200] * 16
                sent += 16
                if len(list(metrics_dir.glob("counter_*.db"))) >= 2:
                    break
        pids = {p.name for p in metrics_dir.glob("counter_*.db")}
        assert len(pids) >= 2, f"one process answered everything: {pids}"
        assert "counter_1.db" not in pids
        # every scrape, by either process, counts every process's requests
        counts = [health_count(url) for _ in range(8)]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert counts == [sent] * 8, (counts, sent, log.read_text()[-2000:])
