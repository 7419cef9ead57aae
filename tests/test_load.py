"""The bounded load test (tools/loadtest.py) run briefly against the real server: zero wrong answers,
and a burst beyond capacity gets 503s instead of piling up. How fast anything answers is measured by
``make bench`` and ``make loadtest``, not asserted here."""
import io
import json
import threading
import time

from PIL import Image

from tests.corpus import multipart
from tests.helpers import png_bytes
from tools import loadtest
from tools.loadtest import Server, request


def test_short_mixed_load_has_no_wrong_answers(tiny_weights):
    report, settings = loadtest.run(clients=8, requests=40, time_cap_s=120, max_concurrent=1, queue_timeout_s=30,
                                    size=16, weights_dir=tiny_weights, threads=8)
    assert report["wrong"] == 0, report["wrong_examples"]
    assert report["server_alive"] and report["requests"] == 40
    assert set(report["per_kind"]) == {"upscale", "stylize", "bad"}
    assert all(k["answered_ok"] > 0 for k in report["per_kind"].values())
    assert report["vmhwm_mib"] > 0 and report["rss_end_mib"] > 0
    assert "| upscale |" in loadtest.markdown(report, settings)


def test_burst_beyond_capacity_gets_503s(tiny_weights):
    """One inference slot, a 0.25 s queue, six slow inferences at once: one or two run, the rest are
    told to come back (503 busy, Retry-After) instead of waiting for the others' work."""
    env = {"WEIGHTS_DIR": str(tiny_weights), "MAX_CONCURRENT": "1", "QUEUE_TIMEOUT_S": "0.25",
           "MAX_UPSCALE_PIXELS": str(160 * 160), "MAX_UPLOAD_BYTES": "2000000"}
    body, ctype = multipart([("image", ("big.png", png_bytes(160, 160), "image/png"))])
    headers = {"Content-Type": ctype, "Accept": "image/png"}
    with Server(env, threads=8) as server:
        assert request(server.port, "POST", "/upscale", body, headers, timeout=60)[0] == 200  # load the model
        results, lock = [], threading.Lock()
        start = threading.Barrier(6)

        def client():
            start.wait()
            status, h, data = request(server.port, "POST", "/upscale", body, headers, timeout=120)
            with lock:
                results.append((status, h, data))

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert server.alive()
    ok = [r for r in results if r[0] == 200]
    busy = [r for r in results if r[0] == 503]
    assert len(ok) + len(busy) == 6 and ok and len(busy) >= 3, [r[0] for r in results]
    for _, h, data in ok:
        assert Image.open(io.BytesIO(data)).size == (640, 640)
    for _, h, data in busy:
        assert json.loads(data)["error"]["code"] == "busy" and int(h["retry-after"]) > 0


def test_health_answers_while_inference_is_saturated(tiny_weights):
    """Twelve slow requests at once with one slot and MAX_QUEUE=2: three are served, the rest get a
    503 busy, and /health answers while they are in flight."""
    env = {"WEIGHTS_DIR": str(tiny_weights), "MAX_CONCURRENT": "1", "QUEUE_TIMEOUT_S": "30", "MAX_QUEUE": "2",
           "MAX_UPSCALE_PIXELS": str(160 * 160), "MAX_UPLOAD_BYTES": "2000000"}
    body, ctype = multipart([("image", ("big.png", png_bytes(160, 160), "image/png"))])
    headers = {"Content-Type": ctype, "Accept": "image/png"}
    with Server(env, threads=4) as server:  # the server raises its threads to 1 + 2 + 2 = 5 at least
        assert request(server.port, "POST", "/upscale", body, headers, timeout=60)[0] == 200
        statuses = []
        threads = [threading.Thread(target=lambda: statuses.append(
            request(server.port, "POST", "/upscale", body, headers, timeout=120)[0])) for _ in range(12)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        assert request(server.port, "GET", "/health", timeout=60)[0] == 200
        for t in threads:
            t.join()
    assert statuses.count(503) >= 6 and statuses.count(200) >= 3, statuses
