"""W3 (100 one-sentence passages) at packing targets of 96/160/224/320 tokens against the CE, per backbone,
alternating: `python benchmarks/target_sweep.py minilm,deberta-small 3` (backbones, repeats)."""
import statistics
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import speed_ckpts
from speed_data import Corpus, build_workloads
from speed_systems import Backbone, make_system, quiet

quiet()
w = build_workloads(Corpus(speed_ckpts._base_tokenizer()), ("W3",))["W3"]
for name in sys.argv[1].split(","):
    gl, ce = speed_ckpts.build(name)
    bb = Backbone(name, gl, ce)
    specs = [{"family": "ours", "tl": t} for t in (96, 160, 224, 320)] + [{"family": "ce"}]
    systems = [make_system(s, bb) for s in specs]
    for s in systems:
        s.prepare(); s.before_run(); s.run(w)
    times = {s.name: [] for s in systems}
    for rep in range(int(sys.argv[2])):
        order = systems[rep % len(systems):] + systems[:rep % len(systems)]
        for s in order:
            s.before_run(); t0 = time.perf_counter(); s.run(w); times[s.name].append(100 / (time.perf_counter() - t0))
    ce_med = statistics.median(times[systems[-1].name])
    for s in systems:
        v = times[s.name]
        print(f"{name} {s.name:40s} {statistics.median(v):7.1f} [{min(v):.1f}-{max(v):.1f}] p/s  vs CE {statistics.median(v)/ce_med:.2f}x", flush=True)
