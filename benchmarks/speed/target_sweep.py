"""W3 (100 one-sentence passages) at packing targets of 96/160/224/320 tokens against the CE, per backbone,
alternating: `python -m benchmarks.speed.target_sweep minilm,deberta-small 3` (backbones, repeats)."""
import argparse
import statistics
import time

from . import ckpts as speed_ckpts
from .data import Corpus, build_workloads
from .systems import Backbone, make_system, quiet

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("backbones", help="comma-separated backbone names (see benchmarks/speed/ckpts.py)")
parser.add_argument("repeats", type=int, help="timed runs per system, alternating")
args = parser.parse_args()
quiet()
w = build_workloads(Corpus(speed_ckpts._base_tokenizer()), ("W3",))["W3"]
for name in args.backbones.split(","):
    gl, ce = speed_ckpts.build(name)
    bb = Backbone(name, gl, ce)
    specs = [{"family": "ours", "tl": t} for t in (96, 160, 224, 320)] + [{"family": "ce"}]
    systems = [make_system(s, bb) for s in specs]
    for s in systems:
        s.prepare(); s.before_run(); s.run(w)
    times = {s.name: [] for s in systems}
    for rep in range(args.repeats):
        order = systems[rep % len(systems):] + systems[:rep % len(systems)]
        for s in order:
            s.before_run(); t0 = time.perf_counter(); s.run(w); times[s.name].append(100 / (time.perf_counter() - t0))
    ce_med = statistics.median(times[systems[-1].name])
    for s in systems:
        v = times[s.name]
        print(f"{name} {s.name:40s} {statistics.median(v):7.1f} [{min(v):.1f}-{max(v):.1f}] p/s  vs CE {statistics.median(v)/ce_med:.2f}x", flush=True)
