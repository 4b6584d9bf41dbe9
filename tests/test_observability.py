"""/__metrics__ counters move with traffic (across processes too); JSON request logs."""

import json
import re
import urllib.request

import pytest

from addonreg.server import Service
from addonreg.storage import Operation
from addonreg.storage.testing import sha
from tests.conftest import CREDS, Client, Writer, make_settings, wait_until

SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", re.M)


def samples(text):
    """{(name, labels): value} from the Prometheus text format."""
    return {(name, labels or ""): float(v) for name, labels, v in SAMPLE.findall(text)}


def value(text, name, **labels):
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    total = 0.0
    for (metric, raw), v in samples(text).items():
        if metric == name and wanted <= set(raw.strip("{}").split(",")) - {""}:
            total += v
    return total


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
async def test_metrics_move_with_traffic(service, client):
    before = await client.get("/__metrics__")
    assert before.code == 200
    assert before.headers["Content-Type"].startswith("text/plain")
    text = before.body.decode()
    file_200 = dict(endpoint="file", method="GET", status="200")
    base = {
        "req": value(text, "addonreg_requests_total", **file_200),
        "req404": value(text, "addonreg_requests_total", endpoint="file", status="404"),
        "hits": value(text, "addonreg_cache_hits_total", cache="files"),
        "misses": value(text, "addonreg_cache_misses_total", cache="files"),
        "batches": value(text, "addonreg_write_batch_size_count"),
        "lat": value(text, "addonreg_request_duration_seconds_count", endpoint="file"),
    }
    [applied] = await service.registry.write([Operation("register", "a@b", sha(1))])
    assert applied.created
    for _ in range(3):
        assert (await client.get(f"/v1/addons/a@b/files/{sha(1)}")).code == 200
    assert (await client.get(f"/v1/addons/a@b/files/{sha(2)}")).code == 404
    text = (await client.get("/__metrics__")).body.decode()
    assert value(text, "addonreg_requests_total", **file_200) == base["req"] + 3
    assert (
        value(text, "addonreg_requests_total", endpoint="file", status="404") == base["req404"] + 1
    )
    assert (
        value(text, "addonreg_request_duration_seconds_count", endpoint="file") == base["lat"] + 4
    )
    # A write does not fill the cache: the first GET and the unknown file miss.
    assert value(text, "addonreg_cache_hits_total", cache="files") == base["hits"] + 2
    assert value(text, "addonreg_cache_misses_total", cache="files") == base["misses"] + 2
    assert value(text, "addonreg_write_batch_size_count") == base["batches"] + 1
    assert value(text, "addonreg_cache_entries", cache="files") == 2
    assert "addonreg_write_queue_depth" in text
    assert "addonreg_invalidation_lag_seconds_count" in text


async def test_bus_counters_rise_with_what_the_bus_does(tmp_path, private_redis):
    """received and reconnects, each counted once per event under addonreg_bus_events_total
    (the per-event counter once read a delta its dedicated twin had just taken: always 0)."""
    private_redis.start()
    settings = make_settings(
        f"sqlite:///{tmp_path}/db.sqlite3",
        pubsub=f"{private_redis.base_url}?channel=metrics-{private_redis.port}",
    )
    a = await Service(settings).start()
    b = await Service(settings).start()
    client = Client(f"http://127.0.0.1:{b.port}")
    try:
        await wait_until(lambda: a.bus.subscribed and b.bus.subscribed, "both subscribed")
        text = (await client.get("/__metrics__")).body.decode()
        before = {
            event: value(text, "addonreg_bus_events_total", event=event)
            for event in ("received", "reconnects")
        }
        await a.registry.write([Operation("register", "a@b", sha(1))])
        await wait_until(lambda: b.bus.stats()["received"] >= 1, "B hears A's change")
        private_redis.kill9()
        await wait_until(lambda: not b.bus.subscribed, "B sees Redis go")
        private_redis.start()
        await wait_until(lambda: b.bus.stats()["reconnects"] >= 1, "B subscribed again")
        text = (await client.get("/__metrics__")).body.decode()  # B pumps at the scrape
        for event in ("received", "reconnects"):
            assert value(text, "addonreg_bus_events_total", event=event) >= before[event] + 1
        assert value(text, "addonreg_invalidations_received_total") >= 1
        assert value(text, "addonreg_pubsub_reconnects_total") >= 1
    finally:
        client.close()
        await b.stop()
        await a.stop()


def scrape(base):
    with urllib.request.urlopen(base + "/__metrics__", timeout=10) as r:
        return r.read().decode()


@pytest.mark.subprocess
def test_metrics_add_up_across_processes(server_process, tmp_path):
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    a, b = server_process(env), server_process(env)
    for _ in range(5):
        urllib.request.urlopen(b.base + "/__lbheartbeat__", timeout=10).read()
    for _ in range(2):
        urllib.request.urlopen(a.base + "/__lbheartbeat__", timeout=10).read()
    text = scrape(a.base)  # A answers for both processes
    assert value(text, "addonreg_requests_total", endpoint="lbheartbeat", status="200") == 7


@pytest.mark.subprocess
async def test_request_lines_are_json_with_an_id_and_no_secrets(server_process):
    proc = server_process(
        {"ADDONREG_ACCESS_LOG": "true", "ADDONREG_HAWK_CREDENTIALS": "amo:" + CREDS["amo"]}
    )
    w = Writer(proc.base)
    try:
        r = await w.get(f"/v1/addons/a@b/files/{sha(1)}", headers={"X-Request-Id": "req-42"})
        assert r.code == 404
        r = await w.signed("PUT", f"/v1/addons/a@b/files/{sha(1)}", {"version": "1"})
        assert r.code == 201
        authorization = r.request.headers["Authorization"]
    finally:
        w.close()
    assert proc.stop() == 0
    lines = [json.loads(line) for line in proc.output if line.startswith("{")]
    assert len(lines) == sum(1 for line in proc.output if line.strip())  # every line is JSON
    requests = [line for line in lines if line["msg"] == "request"]
    first = next(r for r in requests if r["rid"] == "req-42")
    assert first["status"] == 404 and first["method"] == "GET" and first["path"].endswith(sha(1))
    assert isinstance(first["duration_ms"], float) and first["remote"] == "127.0.0.1"
    put = next(r for r in requests if r["method"] == "PUT")
    assert put["status"] == 201 and len(put["rid"]) == 32
    log = "".join(proc.output)
    assert CREDS["amo"] not in log and authorization not in log
    assert "mac=" not in log
