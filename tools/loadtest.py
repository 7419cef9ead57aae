"""Bounded load test of the real local server, over loopback only.

Starts ``python -m imgapi serve`` (waitress) on a free 127.0.0.1 port with the given inference
bound (``MAX_CONCURRENT``) and queue wait (``QUEUE_TIMEOUT_S``), drives it with ``--clients``
threads for a fixed number of requests (and a wall-clock cap), mixing upscale, stylize (when the
weights have a style) and bad requests, checks every answer, samples the server's memory, stops
the server and prints a JSON report and a markdown table.

    .venv/bin/python -m tools.loadtest --clients 8 --requests 200 --max-concurrent 2

A correct answer is: 200 with a PNG of the expected size for good requests, the documented 4xx
JSON error for bad ones, or 503 ``busy`` with ``Retry-After`` when the bounded queue is full.
Anything else counts as wrong. The exit status is 1 when any answer was wrong.
"""
import argparse
import base64
import http.client
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_kib(pid):
    """``{"rss": VmRSS, "hwm": VmHWM}`` of process ``pid`` in KiB (Linux /proc), or {} if unreadable."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss" if key == "VmRSS" else "hwm"] = int(value.split()[0])
    except OSError:
        return {}
    return out


def request(port, method, target, body=b"", headers=None, timeout=60):
    """One HTTP request to 127.0.0.1:``port``; returns ``(status, headers dict, body bytes)``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, target, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class Server:
    """``python -m imgapi serve`` on a free loopback port, as a context manager.

    ``env``: extra environment variables (``WEIGHTS_DIR``, ``MAX_CONCURRENT``...). Stdout and stderr
    (the JSON request log) go to ``log_path``, or are discarded.
    """

    def __init__(self, env=None, threads=8, log_path=None, port=None, startup_s=90):
        self.port = port or free_port()
        self.env = {**os.environ, "TORCH_THREADS": "1", **(env or {})}
        self.env["PYTHONPATH"] = str(ROOT) + os.pathsep + self.env.get("PYTHONPATH", "")
        self.threads, self.log_path, self.startup_s = threads, log_path, startup_s
        self.proc = None

    def __enter__(self):
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imgapi", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--threads", str(self.threads)], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        if self.log_path:
            out.close()
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.proc.returncode} at start")
            try:
                if request(self.port, "GET", "/health", timeout=2)[0] in (200, 503):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not answer on port {self.port} within {self.startup_s} s")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __exit__(self, *exc):
        self.stop()


# -- requests of the mix ---------------------------------------------------------------------
def _multipart(fields):
    boundary = "loadtest-b0undary"
    out = io.BytesIO()
    for name, value in fields:
        out.write(f"--{boundary}\r\n".encode())
        if isinstance(value, bytes):
            out.write(f'Content-Disposition: form-data; name="{name}"; filename="x.png"\r\n'
                      "Content-Type: image/png\r\n\r\n".encode() + value)
        else:
            out.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode())
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _png(w, h, seed):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


def make_jobs(n, size, styles, seed=0):
    """``n`` requests: dicts with kind, method, target, body, headers and what a right answer is."""
    rnd = random.Random(seed)
    images = [(_png(size + d, size - d, seed=i), size + d, size - d) for i, d in enumerate((0, 2, 4, 6))]
    bad = [
        ("POST", "/upscale", b"not an image", {"Content-Type": "image/png"}, 415),
        ("POST", "/upscale?scale=9", images[0][0], {"Content-Type": "image/png"}, 400),
        ("GET", "/upscale", b"", {}, 405),
        ("POST", "/stylize?style=../x", images[0][0], {"Content-Type": "image/png"}, 400),
        ("POST", "/upscale", b"{}", {"Content-Type": "application/json"}, 415),
    ]
    kinds = ["upscale", "stylize", "bad"] if styles else ["upscale", "bad"]
    jobs = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        data, w, h = rnd.choice(images)
        accept = rnd.choice(["application/json", "image/png"])
        if kind == "upscale":
            scale = rnd.choice((2, 3, 4))
            body, ctype = _multipart([("image", data), ("scale", str(scale)),
                                      ("model", rnd.choice(("srgan", "srresnet")))])
            jobs.append(dict(kind=kind, method="POST", target="/upscale", body=body, expect=200,
                             size=(w * scale, h * scale), headers={"Content-Type": ctype, "Accept": accept}))
        elif kind == "stylize":
            body, ctype = _multipart([("image", data), ("style", rnd.choice(styles)),
                                      ("strength", str(rnd.choice((0.5, 1.0))))])
            jobs.append(dict(kind=kind, method="POST", target="/stylize", body=body, expect=200, size=(w, h),
                             headers={"Content-Type": ctype, "Accept": accept}))
        else:
            method, target, body, headers, status = rnd.choice(bad)
            jobs.append(dict(kind=kind, method=method, target=target, body=body, expect=status, size=None,
                             headers={**headers, "Accept": "application/json"}))
    return jobs


def check(job, status, headers, body):
    """None if the answer is right for ``job``, else what is wrong. 503 busy counts as right."""
    if status == 503:
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return "503 without a JSON error"
        return None if code == "busy" and headers.get("retry-after") else f"503 {code}"
    if status != job["expect"]:
        return f"status {status}, expected {job['expect']}: {body[:200]!r}"
    if status != 200:
        try:
            err = json.loads(body)["error"]
            return None if err["code"] and err["message"] else "empty error"
        except (ValueError, KeyError, TypeError):
            return f"{status} without a JSON error body"
    from PIL import Image
    try:
        png = body if headers.get("content-type", "").startswith("image/png") else \
            base64.b64decode(json.loads(body)["image"])
        img = Image.open(io.BytesIO(png))
        img.load()
    except Exception as exc:  # any unreadable answer is a wrong answer, reported, not raised
        return f"200 with an unreadable image ({type(exc).__name__})"
    if img.format != "PNG" or img.size != job["size"]:
        return f"200 with a {img.format} of {img.size}, expected PNG {job['size']}"
    return None


def _percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q * (len(values) - 1))))] * 1000, 1)


def drive(port, pid, jobs, clients, time_cap_s, timeout_s=120):
    """Send ``jobs`` from ``clients`` threads; stop at ``time_cap_s``. Returns the report dict."""
    lock = threading.Lock()
    results, it = [], iter(jobs)
    peak = {"rss": 0, "hwm": 0}
    timeline = []  # (seconds since start, VmRSS KiB)
    stop = threading.Event()
    deadline = time.monotonic() + time_cap_s

    def sampler():
        while not stop.is_set():
            m = memory_kib(pid)
            peak["rss"], peak["hwm"] = max(peak["rss"], m.get("rss", 0)), max(peak["hwm"], m.get("hwm", 0))
            timeline.append((time.perf_counter() - t0, m.get("rss", 0)))
            stop.wait(0.1)

    def worker():
        while time.monotonic() < deadline:
            with lock:
                job = next(it, None)
            if job is None:
                return
            t0 = time.perf_counter()
            try:
                status, headers, body = request(port, job["method"], job["target"], job["body"], job["headers"],
                                                timeout=timeout_s)
                wrong = check(job, status, headers, body)
            except OSError as exc:
                status, wrong = None, f"connection error: {type(exc).__name__}: {exc}"
            with lock:
                results.append((job["kind"], status, time.perf_counter() - t0, wrong))

    mem_start = memory_kib(pid)
    t0 = time.perf_counter()
    threading.Thread(target=sampler, daemon=True).start()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    stop.set()
    mem_end = memory_kib(pid)
    per_kind = {}
    for kind in sorted({r[0] for r in results}):
        rs = [r for r in results if r[0] == kind]
        ok = [r[2] for r in rs if r[1] is not None and r[1] != 503 and r[3] is None]
        busy = [r[2] for r in rs if r[1] == 503 and r[3] is None]
        per_kind[kind] = {"sent": len(rs), "answered_ok": len(ok), "busy_503": sum(r[1] == 503 for r in rs),
                          "wrong": sum(r[3] is not None for r in rs),
                          "p50_ms": _percentile(ok, 0.5), "p95_ms": _percentile(ok, 0.95),
                          "busy_p95_ms": _percentile(busy, 0.95)}
    statuses = {}
    for r in results:
        statuses[str(r[1])] = statuses.get(str(r[1]), 0) + 1
    wrong = [f"{r[0]}: {r[3]}" for r in results if r[3] is not None]
    return {
        "requests": len(results), "not_sent": len(jobs) - len(results), "clients": clients,
        "wall_s": round(wall, 2), "throughput_rps": round(len(results) / wall, 2) if wall else None,
        "ok_rps": round(sum(k["answered_ok"] for k in per_kind.values()) / wall, 2) if wall else None,
        "statuses": statuses, "busy_503": statuses.get("503", 0), "wrong": len(wrong),
        "wrong_examples": wrong[:10], "per_kind": per_kind,
        "rss_start_mib": mib(mem_start.get("rss", 0)), "rss_end_mib": mib(mem_end.get("rss", 0)),
        "rss_peak_sampled_mib": mib(peak["rss"]),
        "rss_timeline_mib": [mib(r) for _, r in _quarters(timeline, wall)] + [mib(mem_end.get("rss", 0))],
        "vmhwm_mib": round(max(peak["hwm"], mem_end.get("hwm", 0)) / 1024, 1),
    }


def mib(kib):
    return round(kib / 1024, 1)


def _quarters(timeline, wall):
    """The samples of ``timeline`` nearest to 0, 25, 50 and 75 % of ``wall``."""
    if not timeline:
        return []
    return [min(timeline, key=lambda s: abs(s[0] - q * wall)) for q in (0, 0.25, 0.5, 0.75)]


def styles_of(weights_dir):
    manifest = json.loads((Path(weights_dir) / "manifest.json").read_text())["models"]
    return sorted(n.split("/", 1)[1] for n, e in manifest.items() if e.get("kind") == "style" and "/" in n)


def markdown(report, settings):
    lines = [f"Load test: {settings}", "",
             f"{report['requests']} requests from {report['clients']} clients in {report['wall_s']} s: "
             f"{report['throughput_rps']} req/s ({report['ok_rps']} req/s answered without a 503); "
             f"wrong answers: {report['wrong']}; 503 busy: {report['busy_503']}; statuses: {report['statuses']}", "",
             "| kind | sent | ok | wrong | p50 ms | p95 ms | 503 busy | 503 p95 ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for kind, k in report["per_kind"].items():
        lines.append(f"| {kind} | {k['sent']} | {k['answered_ok']} | {k['wrong']} | {k['p50_ms']} | "
                     f"{k['p95_ms']} | {k['busy_503']} | {k['busy_p95_ms'] or '-'} |")
    lines += ["", f"server memory: RSS {report['rss_start_mib']} MiB after warm-up, {report['rss_end_mib']} MiB "
                  f"at the end, peak {report['vmhwm_mib']} MiB (VmHWM); at 0/25/50/75/100 % of the run: "
                  f"{' / '.join(map(str, report['rss_timeline_mib']))} MiB"]
    return "\n".join(lines)


def run(clients=8, requests=120, time_cap_s=120.0, max_concurrent=1, queue_timeout_s=20.0, size=32,
        weights_dir=None, threads=8, env=None, seed=0, max_queue=None):
    """Start the server, warm it up (one request per kind, so models are loaded before RSS is read),
    drive it, stop it. Returns ``(report, settings)``."""
    tmp = None
    if weights_dir is None:
        weights_dir = ROOT / "weights"
        if not (weights_dir / "manifest.json").is_file():
            sys.path.insert(0, str(ROOT))
            from tools.fixtures import write_weights  # tiny traced networks
            tmp = tempfile.TemporaryDirectory(prefix="loadtest-weights-")
            weights_dir = Path(tmp.name)
            write_weights(weights_dir)
    styles = styles_of(weights_dir)
    settings = (f"clients={clients} requests={requests} MAX_CONCURRENT={max_concurrent} "
                f"MAX_QUEUE={max_queue or 'default'} QUEUE_TIMEOUT_S={queue_timeout_s:g} image~{size}px "
                f"weights={weights_dir}"
                + (" (tiny test networks)" if tmp else ""))
    server_env = {"WEIGHTS_DIR": str(weights_dir), "MAX_CONCURRENT": str(max_concurrent),
                  "QUEUE_TIMEOUT_S": str(queue_timeout_s), "MODEL_BUCKET": "", **(env or {})}
    if max_queue is not None:
        server_env["MAX_QUEUE"] = str(max_queue)
    try:
        with Server(server_env, threads=threads) as server:
            warm = list({j["kind"]: j for j in make_jobs(6, size, styles, seed + 1)}.values())
            for job in warm:
                request(server.port, job["method"], job["target"], job["body"], job["headers"], timeout=120)
            report = drive(server.port, server.proc.pid, make_jobs(requests, size, styles, seed), clients,
                           time_cap_s)
            report["server_alive"] = server.alive()
    finally:
        if tmp:
            tmp.cleanup()
    return report, settings


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.loadtest", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=8, help="concurrent client threads (default 8)")
    p.add_argument("--requests", type=int, default=120, help="requests in all (default 120)")
    p.add_argument("--time-cap", type=float, default=120.0, help="stop sending after this many seconds")
    p.add_argument("--max-concurrent", type=int, default=1, help="server's MAX_CONCURRENT (default 1)")
    p.add_argument("--queue-timeout", type=float, default=20.0, help="server's QUEUE_TIMEOUT_S (default 20)")
    p.add_argument("--max-queue", type=int, help="server's MAX_QUEUE (default: the server's, 4)")
    p.add_argument("--size", type=int, default=32, help="side of the test images in pixels (default 32)")
    p.add_argument("--threads", type=int, default=8, help="waitress threads (default 8)")
    p.add_argument("--weights", type=Path, help="weights folder (default weights/, else tiny test networks)")
    p.add_argument("--json", type=Path, help="also write the JSON report here")
    a = p.parse_args(argv)
    report, settings = run(a.clients, a.requests, a.time_cap, a.max_concurrent, a.queue_timeout, a.size,
                           a.weights, a.threads, max_queue=a.max_queue)
    report["settings"] = settings
    text = json.dumps(report, indent=2)
    if a.json:
        a.json.write_text(text + "\n")
    print(text)
    print()
    print(markdown(report, settings))
    return 1 if report["wrong"] or not report["server_alive"] else 0


if __name__ == "__main__":
    sys.exit(main())
