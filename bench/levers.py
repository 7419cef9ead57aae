"""The earlier levers of docs/performance.md, each A/B timed interleaved in one run (about 3 minutes on 2 cores).

    python -m bench.levers

* SR export: plain trace (as before) vs BatchNorm folded vs folded + channels_last (what
  ``training.export.export_sr()`` wrote before it also rewrote the tail) vs that frozen, with ONNX Runtime
  alongside, 128x128 input;
* glibc heap kept between forwards (``engine.keep_freed_memory``) or not: fresh interpreters, forward
  time and minor page faults per forward;
* tile size 192 vs 256 on a 512x512 upscale through the engine.

The network is ``SRResNet()`` with random (seeded) weights and BatchNorm statistics, so folding is tested on
non-trivial statistics; speed does not depend on the values.
"""
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.bench import ROOT, interleaved, onnx_session, photo, to_input
from imgapi import engine
from imgapi.config import Config
from model.srresnet import SRResNet


def random_srresnet(seed=0):
    torch.manual_seed(seed)
    net = SRResNet().eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    torch.nn.init.normal_(net.tail.weight, std=0.01)
    return net


def trace(net, path):
    with torch.inference_mode():
        torch.jit.trace(net, torch.rand(1, 3, 32, 32), check_trace=False).save(str(path))
    return torch.jit.load(str(path), map_location="cpu").eval()


ALLOC = r"""
import json, resource, statistics, sys, time
import torch
from imgapi import engine
torch.set_num_threads(int(sys.argv[2]))
on = sys.argv[3] == "on" and engine.keep_freed_memory()
m = torch.jit.load(sys.argv[1]).eval()
x = torch.rand(1, 3, 128, 128)
ts, faults = [], []
with torch.inference_mode():
    m(x); m(x)
    for _ in range(5):
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter(); m(x); ts.append(time.perf_counter() - t)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
print(json.dumps({"on": on, "ms": statistics.median(ts) * 1000, "faults": statistics.median(faults)}))
"""


def main():
    threads = Config().torch_threads
    torch.set_num_threads(threads)
    from torch.fx.experimental.optimization import fuse

    from training.export import export_sr as export
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        net = random_srresnet()
        plain = trace(net, tmp / "plain.pt")
        folded = trace(fuse(net), tmp / "folded.pt")
        export(net, tmp / "shipped.pt")
        shipped = torch.jit.load(str(tmp / "shipped.pt")).eval()
        frozen = torch.jit.freeze(torch.jit.load(str(tmp / "shipped.pt")).eval())
        sess = onnx_session(plain, tmp / "sr.onnx", threads, torch.rand(1, 3, 64, 64))
        x = to_input(photo(128))
        with torch.inference_mode():
            ref = net(x)
            diffs = {k: (m(x) - ref).abs().max().item() for k, m in
                     (("plain", plain), ("folded", folded), ("folded_cl", shipped), ("frozen", frozen))}
            t = interleaved({"plain": lambda: plain(x), "folded": lambda: folded(x),
                             "folded_cl": lambda: shipped(x), "frozen": lambda: frozen(x),
                             "ort": lambda: sess.run(None, {"x": x.numpy()})}, 5, warmup=2)
        base = statistics.median(t["plain"])
        out["export"] = {k: {"ms": round(statistics.median(v) * 1000, 1),
                             "speedup_vs_plain": round(base / statistics.median(v), 2),
                             "max_abs_diff": diffs.get(k)} for k, v in t.items()}
        print("export (128x128, ms):", json.dumps(out["export"]), flush=True)

        out["heap"] = {}
        for state in ("off", "on", "off", "on"):
            r = subprocess.run([sys.executable, "-c", ALLOC, str(tmp / "shipped.pt"), str(threads), state],
                               cwd=ROOT, capture_output=True, text=True, check=True)
            out["heap"].setdefault(state, []).append(json.loads(r.stdout.strip().splitlines()[-1]))
        print("keep_freed_memory (128x128 forward):", json.dumps(out["heap"]), flush=True)

        img = photo(512)
        t = interleaved({f"tile{s}": (lambda s=s: engine.upscale(shipped, img, None, 4, tile=s, overlap=16))
                         for s in (192, 256)}, 2, warmup=0)
        out["tile"] = {k: round(statistics.median(v), 2) for k, v in t.items()}
        print("upscale 512x512 through the engine (s):", json.dumps(out["tile"]), flush=True)
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "levers.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
