"""Speed benchmark: gliclass-rerank against upstream `gliclass` and a sentence-transformers CrossEncoder.

Usage (from the repository root):

    python -m benchmarks.speed --out /tmp/speed_results                      # everything, bounded
    python -m benchmarks.speed --quick --out /tmp/speed_quick                  # a few minutes
    python -m benchmarks.speed --backbones minilm --workloads W1,W3 --repeats 5

What it does (see docs/speed.md for the results and how to read them):

- builds real-size backbones with random weights as GLiClass checkpoints (`benchmarks/speed/ckpts.py`,
  under --ckpts, default /tmp/speed_ckpts) and a cross-encoder on the same backbone config;
- builds the workloads W1-W5 from real text in ../shared/data (`benchmarks/speed/data.py`);
- times every system in the same process, alternating them within each repeat (the order rotates from one
  repeat to the next) and reports the median and min/max throughput (wall clock) plus the median throughput
  per CPU-second (less sensitive to other processes on a shared machine);
- checks that ours and upstream, fed the same groups, give the same scores (max abs diff, printed);
- measures peak memory in a fresh child process per (system, workload): RSS high-water mark (VmHWM, reset via
  /proc/self/clear_refs after loading) during one run. In one process, systems timed one after another share
  glibc's freed-but-kept arenas, so an in-process RSS delta under-reports every system but the first; a
  sampling thread misses short peaks. A child's VmHWM is exact and costs one model load per measurement;
- sweeps passages_per_pass, max_length, batch_size and passage length; checks the cost is linear in the
  number of passages; measures the core's `quantize="int8"` (and optionally `compile=True`) and their drift;
- writes speed.json, speed.md (tables) and speed_ppp.png / speed_length.png into --out.

Torch keeps its default thread count. Token-id caches are cleared before every timed run of ours (cold,
as for passages never seen before); the `warm_cache` variant measures what the cache saves.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..common import REPO_ROOT, spread
from .ckpts import BACKBONES, DEFAULT_ROOT, build
from .data import Workload
from .systems import Backbone, make_system, max_abs_diff, quiet, spec_name

LONG_W = ("W1", "W2", "W4")


# ---------------------------------------------------------------------------------------------- utils
def log(*a):
    print(f"[{dt.datetime.now(dt.timezone.utc).strftime('%H:%M:%S')}]", *a, flush=True)


def loadavg() -> float:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return float("nan")


def rss_kb() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                out[k] = int(v.split()[0])
    return out


def malloc_trim():
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def wl_to_json(w: Workload) -> dict:
    return {
        "name": w.name,
        "description": w.description,
        "queries": w.queries,
        "passages": w.passages,
        "unit": w.unit,
        "claims": w.claims,
    }


def wl_from_json(d: dict) -> Workload:
    return Workload(
        d["name"], d["description"], d["queries"], d["passages"], d["unit"], d["claims"]
    )


def mini(w: Workload) -> Workload:
    """A small slice of a workload, for warming up a system (not timed)."""
    if w.claims:
        return Workload(
            w.name + "-warm",
            "",
            w.queries[:1],
            w.passages[:1],
            w.unit,
            [w.claims[0][:3]],
        )
    return Workload(w.name + "-warm", "", w.queries[:1], [w.passages[0][:4]], w.unit)


def summarize(recs: list[dict]) -> dict:
    thr = [r["units"] / r["wall_s"] for r in recs]
    cpu = [r["units"] / r["cpu_s"] for r in recs if r["cpu_s"] > 0]
    return {
        **spread(thr),
        "units": recs[0]["units"],
        "median_per_cpu_s": statistics.median(cpu) if cpu else None,
        "median_wall_s": statistics.median(r["wall_s"] for r in recs),
        "loadavg": statistics.median(r["loadavg"] for r in recs),
    }


# ---------------------------------------------------------------------------------------------- timing
class Bench:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results = {
            "meta": {
                "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(
                    timespec="seconds"
                ),
                "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.speed"] + sys.argv[1:]),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
                "cpu": _cpu_name(),
                "loadavg_start": loadavg(),
            },
            "timings": [],
            "summary": {},
            "checks": [],
            "memory": [],
            "linear": [],
            "drift": [],
            "systems": {},
        }
        try:
            import gliclass
            import sentence_transformers
            import transformers

            self.results["meta"].update(
                transformers=transformers.__version__,
                gliclass=gliclass.__version__,
                sentence_transformers=sentence_transformers.__version__,
            )
        except ImportError:  # pragma: no cover
            pass
        self.workloads: dict[str, Workload] = {}

    def save(self):
        self.results["meta"]["loadavg_end"] = loadavg()
        (self.out / "speed.json").write_text(
            json.dumps(self.results, indent=1, default=str)
        )

    def time_systems(
        self,
        bb: Backbone,
        w: Workload,
        specs: list[dict],
        repeats: int,
        budget_s: float,
        experiment: str,
        checks: bool = True,
    ) -> dict:
        """Alternate the systems over `repeats` (rotating their order) and record each run."""
        systems = []
        for spec in specs:
            sy = make_system(spec, bb)
            try:
                sy.prepare()
            except Exception as e:  # noqa: BLE001 - a system that cannot run this backbone is reported, not fatal
                log(f"  skip {sy.name}: {type(e).__name__}: {e}")
                self.results["checks"].append(
                    {
                        "backbone": bb.name,
                        "workload": w.name,
                        "system": sy.name,
                        "error": f"{type(e).__name__}: {e}",
                    }
                )
                continue
            systems.append(sy)
        warm = mini(w)
        for sy in (
            systems
        ):  # warm-up: first-call costs (allocations, lazy init) out of the timings
            sy.before_run()
            sy.run(warm)
        outputs, recs_by = {}, {sy.name: [] for sy in systems}
        t_start = time.perf_counter()
        for rep in range(repeats):
            k = rep % len(systems)
            order = systems[k:] + systems[:k]
            t_rep = time.perf_counter()
            for sy in order:
                sy.before_run()
                gc.collect()
                la = loadavg()
                c0, t0 = time.process_time(), time.perf_counter()
                out = sy.run(w)
                t1, c1 = time.perf_counter(), time.process_time()
                rec = {
                    "backbone": bb.name,
                    "workload": w.name,
                    "experiment": experiment,
                    "system": sy.name,
                    "family": sy.family,
                    "spec": {
                        k2: v for k2, v in sy.spec.items() if not k2.startswith("_")
                    },
                    "info": dict(sy.info),
                    "rep": rep,
                    "units": w.n_units,
                    "wall_s": t1 - t0,
                    "cpu_s": c1 - c0,
                    "loadavg": la,
                }
                self.results["timings"].append(rec)
                recs_by[sy.name].append(rec)
                if rep == 0:
                    outputs[sy.name] = out
                    if hasattr(sy, "group_sizes"):
                        gs = sy.group_sizes(w)
                        sy.info["groups"] = len(gs)
                        sy.info["mean_group"] = round(float(np.mean(gs)), 2)
                        rec["info"] = dict(sy.info)
                log(
                    f"  {bb.name} {w.name} rep{rep} {sy.name:32s} {w.n_units / (t1 - t0):9.2f} {w.unit}/s "
                    f"(cpu {w.n_units / max(c1 - c0, 1e-9):7.2f}/cpu-s, load {la:.1f})"
                )
            elapsed = time.perf_counter() - t_start
            last = time.perf_counter() - t_rep
            if rep + 1 < repeats and elapsed + last > budget_s:
                log(
                    f"  {w.name}: stopping after {rep + 1} repeats (budget {budget_s:.0f}s)"
                )
                break
        summ = {}
        for sy in systems:
            s = summarize(recs_by[sy.name])
            s.update(
                family=sy.family,
                spec={k: v for k, v in sy.spec.items() if not k.startswith("_")},
                info=dict(sy.info),
                unit=w.unit,
            )
            summ[sy.name] = s
        self.results["summary"].setdefault(bb.name, {}).setdefault(experiment, {})[
            w.name
        ] = summ
        if checks:
            self._check_scores(bb, w, systems, outputs, experiment)
        self._systems = {sy.name: sy for sy in systems}
        self.save()
        return summ

    def _check_scores(self, bb, w, systems, outputs, experiment):
        by = {sy.name: sy for sy in systems}
        for sy in systems:
            if sy.family in ("upstream", "chunking"):
                ours_name = spec_name(
                    dict(
                        {k: v for k, v in sy.spec.items() if not k.startswith("_")},
                        family="ours",
                    )
                )
                if ours_name in outputs:
                    d = max_abs_diff(outputs[ours_name], outputs[sy.name])
                    ok = d < 1e-4
                    self.results["checks"].append(
                        {
                            "backbone": bb.name,
                            "workload": w.name,
                            "experiment": experiment,
                            "ours": ours_name,
                            "other": sy.name,
                            "max_abs_diff": d,
                            "equal": ok,
                        }
                    )
                    log(
                        f"  CHECK {bb.name} {w.name}: {ours_name} vs {sy.name}: max abs diff {d:.2e} "
                        f"{'OK' if ok else 'MISMATCH'}"
                    )
                    if sy.family == "upstream" and not ok and self.args.strict:
                        raise AssertionError(
                            f"scores differ: {ours_name} vs {sy.name}: {d}"
                        )
            if sy.family == "ours" and (
                sy.spec.get("quantize") or sy.spec.get("compile")
            ):
                base = spec_name(
                    {
                        k: v
                        for k, v in sy.spec.items()
                        if k not in ("quantize", "compile") and not k.startswith("_")
                    }
                )
                if base in outputs:
                    self.results["drift"].append(
                        dict(
                            drift(outputs[base], outputs[sy.name]),
                            backbone=bb.name,
                            workload=w.name,
                            system=sy.name,
                            reference=base,
                        )
                    )
                    log(
                        f"  DRIFT {bb.name} {w.name} {sy.name} vs {base}: {self.results['drift'][-1]}"
                    )
        del by

    # ------------------------------------------------------------------------------------- memory
    def memory(self, bb: Backbone, w: Workload, spec: dict, preset: dict | None = None):
        """Peak RSS of one run of one system in a fresh child process."""
        spec = dict(spec)
        if preset is not None:
            spec["_preset"] = preset
        job = {
            "backbone": bb.name,
            "gl_dir": bb.gl_dir,
            "ce_dir": bb.ce_dir,
            "workload": wl_to_json(w),
            "spec": spec,
        }
        jf = self.out / f".child_{os.getpid()}.json"
        jf.write_text(json.dumps(job))
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.speed", "--_child", str(jf)],
            cwd=REPO_ROOT,
            check=False,
            capture_output=True,
            text=True,
            timeout=self.args.child_timeout,
        )
        res = None
        for line in proc.stdout.splitlines():
            if line.startswith("CHILD_RESULT "):
                res = json.loads(line[len("CHILD_RESULT ") :])
        if res is None:
            res = {"error": (proc.stderr or proc.stdout)[-800:]}
        res.update(
            backbone=bb.name,
            workload=w.name,
            system=spec_name(spec),
            child_wall_s=time.perf_counter() - t0,
        )
        self.results["memory"].append(res)
        log(
            f"  MEM {bb.name} {w.name} {spec_name(spec):28s} "
            + (
                f"peak {res['peak_mb']:.0f} MB (loaded {res['loaded_mb']:.0f}, +{res['delta_mb']:.0f} during run; "
                f"peak while loading {res['load_peak_mb']:.0f})"
                if "peak_mb" in res
                else f"ERROR {res.get('error')}"
            )
        )
        jf.unlink(missing_ok=True)
        self.save()
        return res


def drift(a, b) -> dict:
    fa = np.concatenate([np.asarray(x, dtype=np.float64) for x in a])
    fb = np.concatenate([np.asarray(x, dtype=np.float64) for x in b])
    rank_a, rank_b = np.argsort(np.argsort(-fa)), np.argsort(np.argsort(-fb))
    rho = float(np.corrcoef(rank_a, rank_b)[0, 1]) if fa.size > 1 else 1.0
    top_a, top_b = (
        set(np.argsort(-fa)[:10].tolist()),
        set(np.argsort(-fb)[:10].tolist()),
    )
    return {
        "max_abs_diff": float(np.max(np.abs(fa - fb))),
        "mean_abs_diff": float(np.mean(np.abs(fa - fb))),
        "spearman": rho,
        "top10_overlap": len(top_a & top_b) / max(1, min(10, fa.size)),
    }


def child_main(path: str):
    """Memory child: load one system, reset the RSS high-water mark, run the workload once, report."""
    quiet()
    job = json.loads(Path(path).read_text())
    w = wl_from_json(job["workload"])
    bb = Backbone(job["backbone"], job["gl_dir"], job["ce_dir"])
    sy = make_system(job["spec"], bb)
    sy.prepare()
    sy.before_run()
    gc.collect()
    malloc_trim()
    load = rss_kb()
    before = load["VmRSS"]
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
        f.write("5")
    t0 = time.perf_counter()
    sy.run(w)
    wall = time.perf_counter() - t0
    peak = rss_kb()["VmHWM"]
    print(
        "CHILD_RESULT "
        + json.dumps(
            {
                "loaded_mb": before / 1024,
                "peak_mb": peak / 1024,
                "delta_mb": (peak - before) / 1024,
                "load_peak_mb": load["VmHWM"] / 1024,
                "run_wall_s": wall,
            }
        ),
        flush=True,
    )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ---------------------------------------------------------------------------------------------- plan
def specs_main(w: Workload, bb_name: str, big: bool, ppps: list[int]) -> list[dict]:
    """The systems of the main comparison on one workload."""
    specs = [{"family": "ours"}, {"family": "upstream"}, {"family": "ce"}]
    # The defaults before the token-based ones (8 passages per pass up to 512 tokens, 16 sequences per pass).
    previous = {"family": "ours", "ppp": 8, "bs": 16, "tl": None, "mbt": None, "tag": "previous-defaults"}
    if w.claims:  # W5: ours entailment, upstream on the same groups, chunking, CE pairs
        if not big:
            specs.append({"family": "chunking"})
        return specs
    if big:  # long passages: is one per sequence cheaper than two on these backbones?
        return specs + ([{"family": "ours", "ppp": 1}] if w.name == "W2" else [])
    if w.name == "W1":  # the expensive one: pairwise-like packing as the alternative
        return specs + [{"family": "ours", "ppp": 1}, previous]
    if w.name == "W4":
        return specs
    specs.append(previous)
    specs.append({"family": "ours_nli"})
    specs.append({"family": "chunking"})
    if w.name == "W2":
        specs += [{"family": "ours", "ppp": 1}, {"family": "upstream", "ppp": 1}]
    if w.name == "W3":
        for p in ppps:
            if True:  # the default packs by a token target, so every count is a distinct layout
                specs += [
                    {"family": "ours", "ppp": p},
                    {"family": "upstream", "ppp": p},
                ]
    return specs


def distinct_packings(bb: Backbone, w: Workload, specs: list[dict]) -> list[dict]:
    """Drop `ours` specs (and their upstream twins) whose packing of `w` equals one already kept: timing the
    same sequences twice tells nothing (e.g. passages_per_pass 4 and 32 both give 2 long passages a pass)."""
    from .systems import ours_groups

    seen, dropped, keep = set(), set(), []
    for s in specs:
        if s["family"] != "ours" or s.get("quantize") or s.get("compile") or w.claims:
            continue
        r = bb.ours(s)
        sig = (r.batch_size, getattr(r, "max_batch_tokens", None)) + tuple(
            tuple(g)
            for q, ps in zip(w.queries, w.passages)
            for g in ours_groups(r, q, ps)
        )
        r.pieces.clear_cache()
        if sig in seen:
            dropped.add(spec_name(s))
        seen.add(sig)
    for s in specs:
        twin = (
            spec_name(dict(s, family="ours"))
            if s["family"] in ("upstream", "chunking")
            else spec_name(s)
        )
        if twin not in dropped:
            keep.append(s)
    if dropped:
        log(
            f"  {w.name}: same packing as a smaller passages_per_pass, not timed: {sorted(dropped)}"
        )
    return keep


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", default=",".join(BACKBONES))
    ap.add_argument("--workloads", default="W1,W2,W3,W4,W5")
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="repeats for MiniLM (larger backbones: --big-repeats)",
    )
    ap.add_argument("--big-repeats", type=int, default=1)
    ap.add_argument(
        "--budget-s",
        type=float,
        default=300,
        help="stop adding repeats to a workload past this",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a few minutes: fewer repeats, W4 with 4 queries, "
        "linear check at 100/1000 only, no length/batch sweeps for large backbones",
    )
    ap.add_argument("--out", default="/tmp/speed_results")
    ap.add_argument("--ckpts", default=str(DEFAULT_ROOT))
    ap.add_argument(
        "--ppp",
        default="1,2,4,8,16,32",
        help="passages_per_pass sweep (W3 and length sweep)",
    )
    ap.add_argument("--w4-queries", type=int, default=64)
    ap.add_argument(
        "--linear",
        default="100,1000,10000",
        help="W1-shape sizes for the linear-cost check",
    )
    ap.add_argument(
        "--lengths",
        default="16,32,64,128,256",
        help="passage lengths (tokens) for the length sweep",
    )
    ap.add_argument(
        "--length-n",
        type=int,
        default=32,
        help="passages per query in the length sweep",
    )
    ap.add_argument(
        "--skip",
        default="",
        help="comma list of stages to skip: main,sweeps,quant,compile,memory,linear",
    )
    ap.add_argument(
        "--sweeps",
        default="ml,bs,cache,length,bslong",
        help="which MiniLM sweeps run (ml, bs, cache, length, bslong)",
    )
    ap.add_argument(
        "--big-memory",
        action="store_true",
        help="peak memory for the larger backbones too (W2)",
    )
    ap.add_argument(
        "--linear-ce",
        default="100",
        help="sizes at which the cross-encoder is timed too",
    )
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also time compile=True (slow to warm up on CPU)",
    )
    ap.add_argument(
        "--strict",
        action="store_true",
        help="abort when ours and upstream scores differ",
    )
    ap.add_argument("--child-timeout", type=int, default=900)
    ap.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        return child_main(args._child)

    quiet()
    if args.quick:
        args.repeats = min(args.repeats, 2)
        args.w4_queries = min(args.w4_queries, 4)
        args.linear = ",".join(x for x in args.linear.split(",") if int(x) <= 1000)
        args.budget_s = min(args.budget_s, 120)
    skip = set(filter(None, args.skip.split(",")))
    ppps = [int(x) for x in args.ppp.split(",")]
    names = [x.strip() for x in args.workloads.split(",") if x.strip()]
    bench = Bench(args)
    log("meta", bench.results["meta"])

    from .ckpts import _base_tokenizer
    from .data import Corpus, build_workloads, length_workload, linear_workload

    corpus = Corpus(_base_tokenizer())
    W = build_workloads(corpus, names)
    if "W4" in W and args.w4_queries < 64:
        w4 = W["W4"]
        W["W4"] = Workload(
            "W4",
            f"{args.w4_queries} queries x 20 passages of ~200 tokens (batch throughput; "
            f"64 in the issue, cut to bound the run)",
            w4.queries[: args.w4_queries],
            w4.passages[: args.w4_queries],
        )
    if args.smoke:  # code-path check only: tiny slices of every workload
        for k, w in list(W.items()):
            if w.claims:
                W[k] = Workload(
                    k,
                    w.description + " [smoke slice]",
                    w.queries[:2],
                    w.passages[:2],
                    w.unit,
                    [c[:3] for c in w.claims[:2]],
                )
            else:
                W[k] = Workload(
                    k,
                    w.description + " [smoke slice]",
                    w.queries[:2],
                    [p[:6] for p in w.passages[:2]],
                )
    bench.results["workloads"] = {
        k: {
            "description": w.description,
            "units": w.n_units,
            "unit": w.unit,
            "mean_passage_tokens": round(
                float(np.mean([corpus.n_tokens(p) for ps in w.passages for p in ps])), 1
            ),
            "mean_query_tokens": round(
                float(
                    np.mean(
                        [corpus.n_tokens(q) for q in w.queries if q]
                        or [corpus.n_tokens(c) for cs in w.claims for c in cs]
                    )
                ),
                1,
            ),
        }
        for k, w in W.items()
    }
    log("workloads", bench.results["workloads"])

    for bname in [b.strip() for b in args.backbones.split(",") if b.strip()]:
        big = bname != "minilm"
        reps = args.big_repeats if big else args.repeats
        log(f"=== backbone {bname}: building/reusing checkpoint")
        bb = Backbone(bname, *build(bname, Path(args.ckpts)))
        bench.results["systems"][bname] = {
            "gliclass_dir": bb.gl_dir,
            "ce_dir": bb.ce_dir,
        }
        # --- main comparison
        if "main" not in skip:
            order = [n for n in ("W1", "W2", "W3", "W5", "W4") if n in W]
            if big:  # long runs: the cheaper shapes only
                order = [n for n in order if n in ("W2", "W3", "W5")]
            for wn in order:
                w = W[wn]
                r = reps if wn != "W4" else max(1, min(reps, 2))
                log(f"--- {bname} {wn}: {w.description}")
                specs = distinct_packings(bb, w, specs_main(w, bname, big, ppps))
                bench.time_systems(bb, w, specs, r, args.budget_s, "main")
        bench.results["systems"][bname]["attn_implementation"] = bb.attn_info()
        # --- sweeps (MiniLM; the recommendation rests on them)
        sweeps = set(args.sweeps.split(","))

        def sweep(workload, specs, tag, bb=bb):
            """A sweep: one repeat fewer than the main comparison, no score checks."""
            bench.time_systems(bb, workload, specs, max(1, reps - 1), args.budget_s, tag, checks=False)

        if not big and "sweeps" not in skip:
            if (
                "bslong" in sweeps and "W1" in W
            ):  # tokens per forward pass with one long passage per sequence
                log(
                    f"--- {bname} batch_size sweep on W1 (one and two passages per sequence)"
                )
                specs = (
                    [{"family": "ours", "ppp": 1, "bs": b} for b in (16, 32, 64)]
                    + [{"family": "ours", "bs": b} for b in (16, 32)]
                    + [{"family": "ours_nli", "bs": 32}]
                    + [{"family": "ce", "bs": b} for b in (16, 32, 64)]
                )
                sweep(W["W1"], specs, "bs_long")
            if (
                "W3" in W and "ml" in sweeps
            ):  # token budget for short passages: max_length with a high passages cap
                log(f"--- {bname} max_length sweep on W3 (ppp 32)")
                specs = [
                    {"family": "ours", "ppp": 32, "ml": m} for m in (128, 256, 384, 512)
                ]
                sweep(W["W3"], specs, "ml_sweep")
            if "W3" in W and "bs" in sweeps:
                log(f"--- {bname} batch_size sweep on W3 (ppp 8) and W2 (default)")
                specs = [{"family": "ours", "bs": b} for b in (1, 4, 16, 64)]
                sweep(W["W3"], specs, "bs_sweep")
            if "W2" in W and "bs" in sweeps:
                specs = [{"family": "ours", "bs": b} for b in (1, 4, 16)] + [
                    {"family": "ce", "bs": b} for b in (8, 32)
                ]
                sweep(W["W2"], specs, "bs_sweep")
            if "W3" in W and "cache" in sweeps:
                log(f"--- {bname} token-id cache: cold vs warm on W3")
                specs = [
                    {"family": "ours"},
                    {"family": "ours", "warm_cache": True, "tag": "warmcache"},
                ]
                bench.time_systems(
                    bb, W["W3"], specs, reps, args.budget_s, "cache", checks=False
                )
            log(f"--- {bname} passage-length sweep")
            for L in (
                []
                if "length" not in sweeps
                else [int(x) for x in args.lengths.split(",")]
            ):
                lw = length_workload(corpus, L, args.length_n)
                specs = distinct_packings(
                    bb,
                    lw,
                    [{"family": "ours", "ppp": p} for p in ppps] + [{"family": "ce"}],
                )
                sweep(lw, specs, "length_sweep")
        # --- int8 / compile
        if "quant" not in skip and not big:
            for wn in ("W2", "W3"):
                if wn in W:
                    log(f"--- {bname} int8 on {wn}")
                    specs = [{"family": "ours"}, {"family": "ours", "quantize": "int8"}]
                    bench.time_systems(bb, W[wn], specs, reps, args.budget_s, "int8")
        if args.compile and "compile" not in skip and not big:
            for wn in ("W1", "W3"):
                if wn in W:
                    log(f"--- {bname} compile=True on {wn} (warm-up includes compilation)")
                    t0 = time.perf_counter()
                    specs = [{"family": "ours"}, {"family": "ours", "compile": True}, {"family": "ce"}]
                    bench.time_systems(bb, W[wn], specs, reps, args.budget_s, "compile")
                    bench.results[f"compile_total_s_{wn}"] = time.perf_counter() - t0
        # --- memory (children)
        if "memory" not in skip and (not big or args.big_memory):
            mem_w = ["W1", "W5"] if not big else ["W2"]
            for wn in mem_w:
                if wn not in W:
                    continue
                w = W[wn]
                log(f"--- {bname} peak memory on {wn}")
                # presets so the upstream children do not load the core's model to plan the groups
                up = make_system({"family": "upstream"}, bb)
                up.prepare()
                up.plan(w)
                up_preset = up.preset([w.name])
                for spec, pre in (
                    ({"family": "ours"}, None),
                    ({"family": "upstream"}, up_preset),
                    ({"family": "ce"}, None),
                ):
                    bench.memory(bb, w, spec, pre)
        # --- linear cost (MiniLM)
        if "linear" not in skip and not big:
            sizes = [int(x) for x in args.linear.split(",") if x]
            for n in sizes:
                lw = linear_workload(corpus, n)
                log(f"--- {bname} linear check n={n}")
                specs = [{"family": "ours"}] + (
                    [{"family": "ce"}] if str(n) in args.linear_ce.split(",") else []
                )
                summ = bench.time_systems(bb, lw, specs, 1, 1e9, "linear", checks=False)
                for name, s in summ.items():
                    bench.results["linear"].append(
                        {
                            "backbone": bname,
                            "n": n,
                            "system": name,
                            "per_s": s["median"],
                            "wall_s": s["median_wall_s"],
                            "per_cpu_s": s["median_per_cpu_s"],
                        }
                    )
                bench.save()
        del bb
        gc.collect()
        malloc_trim()

    bench.save()
    from .report import write_report

    write_report(bench.results, bench.out)
    log("done:", bench.out)


if __name__ == "__main__":
    main()
