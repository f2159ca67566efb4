"""GPU speed benchmark: gliclass-rerank against upstream `gliclass` and a sentence-transformers CrossEncoder.

The CPU harness (`python -m benchmarks.speed`) times per CPU-second with child processes for peak RSS; on a GPU the clock is
the wall clock around `torch.cuda.synchronize()` and memory is the CUDA allocator's peak. The workloads
(W1-W5 from real SciFact / TrecQA text, `data.py`), the random-weight backbones at real sizes
(`ckpts.py`) and the systems (`systems.py`) are the CPU benchmark's own, so the two read alike.

Systems per backbone (all on one GPU, same process, alternating runs; the first runs of each are warm-up):
  ours fp32 / bf16 / fp16  library defaults (target 320 tokens, 8,192 tokens per pass, batch 64)
  ours bf16 big-batch      65,536 tokens per pass, batch 256 (what a GPU can take)
  ours bf16 ppp16          no packing target: up to 16 passages per sequence (max_length 512)
  upstream fp32 / bf16     `ZeroShotClassificationPipeline` on the same checkpoint, fed exactly the groups
                           ours fp32 packs (so fp32 scores must agree)
  ce fp32 / bf16 (bs 32), ce bf16 bs 128   `CrossEncoder(...).predict(pairs, batch_size=...)`
With --compile, also (COMPILED; each `warm_up()` before its workloads, whose 2 warm-up runs record the graphs):
  ours fp32 / bf16 compile     `compile=True` (torch.compile, dynamic shapes)
  ours fp32 / bf16 cudagraphs  `compile="reduce-overhead"` (CUDA graphs on a GPU)
The checks compare each with eager in its dtype (fp32: the documented 1e-4, PASS / FAIL in the report), and
the report gives each system's preparation (load + compile + `warm_up()`) seconds: the start-up cost.

    python -m benchmarks.speed.gpu --out /tmp/speed_gpu           # needs a CUDA device
    python -m benchmarks.speed.gpu --compile --backbones minilm,deberta-base --out /tmp/speed_gpu_compile

Writes `speed_gpu.json` and `speed_gpu.md` in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from ..common import spread
from . import ckpts as speed_ckpts
from .data import DATA_ROOT, Corpus, build_workloads, linear_workload
from .systems import Backbone, make_system, max_abs_diff, quiet, spec_name

SYSTEMS = [
    {"family": "ours", "dtype": "float32"},
    {"family": "ours", "dtype": "bfloat16"},
    {"family": "ours", "dtype": "float16"},
    {"family": "ours", "dtype": "bfloat16", "bs": 256, "mbt": 65536, "tag": "big"},
    {"family": "ours", "dtype": "bfloat16", "ppp": 16, "tl": None},
    {"family": "upstream", "dtype": "float32"},
    {"family": "upstream", "dtype": "bfloat16"},
    {"family": "ce", "dtype": "float32"},
    {"family": "ce", "dtype": "bfloat16"},
    {"family": "ce", "dtype": "bfloat16", "bs": 128},
]
# --compile: compiled systems, each checked against eager in its dtype (COMPILE_CHECKS: check name -> pair)
COMPILED = [
    {"family": "ours", "dtype": "float32", "compile": True},
    {"family": "ours", "dtype": "bfloat16", "compile": True},
    {"family": "ours", "dtype": "float32", "compile": "reduce-overhead"},
    {"family": "ours", "dtype": "bfloat16", "compile": "reduce-overhead"},
]
OURS_REF, OURS_DEFAULT, UP_REF, CE_REF = "ours", "ours-bfloat16", "upstream", "ce-bfloat16"  # spec names
COMPILE_CHECKS = {
    "compile_vs_eager_fp32": ("ours-compile", OURS_REF),
    "cudagraphs_vs_eager_fp32": ("ours-cudagraphs", OURS_REF),
    "compile_vs_eager_bf16": ("ours-bfloat16-compile", OURS_DEFAULT),
    "cudagraphs_vs_eager_bf16": ("ours-bfloat16-cudagraphs", OURS_DEFAULT),
}
# The documented tolerance (GLiClassReranker's `compile`): compiled = eager within 1e-4 in float32; in bf16,
# within the precision's own drift, read here as no more than eager bf16's own distance from eager fp32.
COMPILE_FP32_TOL = 1e-4
CUDA = True


def sync():
    if CUDA:
        torch.cuda.synchronize()


def timed(system, workload) -> tuple[float, list]:
    system.before_run()
    sync()
    start = time.perf_counter()
    scores = system.run(workload)
    sync()
    return time.perf_counter() - start, scores


def cudagraph_counters() -> dict:
    """inductor's CUDA-graph counters so far (`cudagraph_skips`: graphs that fell back to no CUDA graphs)."""
    from torch._dynamo.utils import counters

    return {k: v for k, v in counters["inductor"].items() if k.startswith("cudagraph")}


def top_overlap(a: list[list[float]], b: list[list[float]], k: int = 10) -> float:
    """Mean share of the top-k (by a) also in b's top-k, per query."""
    shares = []
    for x, y in zip(a, b):
        kk = min(k, len(x))
        ta = set(np.argsort(-np.asarray(x))[:kk])
        tb = set(np.argsort(-np.asarray(y))[:kk])
        shares.append(len(ta & tb) / kk)
    return float(np.mean(shares))


def bench_workload(systems: dict, w, repeats: int, budget_s: float) -> dict:
    out: dict = {}
    scores: dict = {}
    live = {}
    warmup_s = {}
    for name, s in systems.items():
        if not s.supports(w):
            continue
        try:
            t0 = time.perf_counter()
            for _ in range(2):  # warm-up: kernels, allocator, token caches, compilation and CUDA graphs of
                _, scores[name] = timed(s, w)  # this workload's shapes (a shape is run, then recorded)
            warmup_s[name] = time.perf_counter() - t0
            live[name] = s
        except Exception as error:  # a system that fails is reported, the others go on
            out[name] = {"error": f"{type(error).__name__}: {error}"[:300]}
            traceback.print_exc()
    times = {n: [] for n in live}
    started = time.perf_counter()
    for rep in range(repeats):
        for name, s in live.items():
            # the checks read the last timed run: with CUDA graphs, a replay (the warm-up runs record)
            dt, scores[name] = timed(s, w)
            times[name].append(dt)
        if rep >= 2 and time.perf_counter() - started > budget_s:
            break
    for name, ts in times.items():
        out[name] = {**spread([w.n_units / t for t in ts]), "runs": len(ts),
                     "median_ms": 1000 * statistics.median(ts), "warmup_s": warmup_s[name], "info": live[name].info}
    # peak CUDA memory of one run above what was allocated before it (weights stay resident)
    for name, s in live.items():
        if not CUDA:
            break
        sync()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        timed(s, w)
        out[name]["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    checks = {}
    if OURS_REF in scores and UP_REF in scores:
        checks["ours_fp32_vs_upstream_fp32_max_abs_diff"] = max_abs_diff(scores[OURS_REF], scores[UP_REF])
    if OURS_REF in scores and OURS_DEFAULT in scores:
        checks["ours_bf16_vs_fp32_max_abs_diff"] = max_abs_diff(scores[OURS_REF], scores[OURS_DEFAULT])
        checks["ours_bf16_vs_fp32_top10_overlap"] = top_overlap(scores[OURS_REF], scores[OURS_DEFAULT])
    for check, (compiled, eager) in COMPILE_CHECKS.items():
        if compiled in scores and eager in scores:
            checks[f"{check}_max_abs_diff"] = max_abs_diff(scores[compiled], scores[eager])
            checks[f"{check}_top10_overlap"] = top_overlap(scores[eager], scores[compiled])
    out["_checks"] = checks
    return out


def compile_verdicts(checks: dict) -> list[str]:
    """PASS / FAIL of each compiled-vs-eager check in `checks` against the documented tolerance."""
    lines = []
    bf16_drift = checks.get("ours_bf16_vs_fp32_max_abs_diff")
    for check in COMPILE_CHECKS:
        diff = checks.get(f"{check}_max_abs_diff")
        if diff is None:
            continue
        if check.endswith("fp32"):
            tol, why = COMPILE_FP32_TOL, "fp32 tolerance"
        elif bf16_drift is not None:
            tol, why = bf16_drift, "eager bf16's own drift from fp32"
        else:
            lines.append(f"{check}: max abs diff {diff:.3g} (no eager fp32 run to bound the bf16 drift)")
            continue
        verdict = "PASS" if diff <= tol else "FAIL"
        lines.append(f"{check}: max abs diff {diff:.3g} vs {tol:.3g} ({why}): **{verdict}**")
    return lines


def ratio(res: dict, a: str, b: str) -> float | None:
    if a in res and b in res and "median" in res[a] and "median" in res[b]:
        return res[a]["median"] / res[b]["median"]
    return None


def markdown(report: dict) -> str:
    lines = [f"# GPU speed ({report['gpu']}, torch {report['torch']}, transformers {report['transformers']}, "
             f"{report['date']})", ""]
    for bname, b in report["backbones"].items():
        lines += [f"## {bname}", "", f"attention: `{json.dumps(b.get('attn', {}))}`", ""]
        if "error" in b:
            lines += [f"error: {b['error']}", ""]
            continue
        if b.get("cudagraph_counters") is not None:
            lines += [f"inductor CUDA-graph counters: `{json.dumps(b['cudagraph_counters'])}` (cudagraph_skips: "
                      "compiled graphs that ran without CUDA graphs, all of them on CPU; TORCH_LOGS=cudagraphs "
                      "says why)", ""]
        if b.get("prepare_s"):
            lines += ["preparation (load + compile + `warm_up()`; compiled systems also spend each workload's "
                      "warm-up s on new shapes), seconds: "
                      + ", ".join(f"{n} {t:.1f}" for n, t in b["prepare_s"].items()), ""]
        for wname, res in b["workloads"].items():
            unit = res.get("_unit", "passages")
            lines += [f"### {wname}: {res.get('_description', '')}", "",
                      f"| system | {unit}/s median [min-max] | ms | peak MiB | warm-up s | / upstream fp32 | / CE bf16 "
                      "| / CE fp32 |",
                      "|---|---|---|---|---|---|---|---|"]
            for name, r in res.items():
                if name.startswith("_"):
                    continue
                if "error" in r:
                    lines.append(f"| {name} | error: {r['error'][:120]} | | | | | | |")
                    continue
                cells = [f"{r['median']:.0f} [{r['min']:.0f}-{r['max']:.0f}]", f"{r['median_ms']:.1f}",
                         f"{r.get('peak_mib', float('nan')):.0f}", f"{r.get('warmup_s', float('nan')):.1f}"]
                for ref in (UP_REF, CE_REF, "ce"):
                    x = ratio(res, name, ref)
                    cells.append("" if x is None else f"{x:.2f}x")
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            if res.get("_checks"):
                lines += ["", "checks: " + ", ".join(f"{k} = {v:.3g}" for k, v in res["_checks"].items())]
                verdicts = compile_verdicts(res["_checks"])
                if verdicts:
                    lines += ["", "compiled vs eager:", ""] + [f"- {v}" for v in verdicts]
            lines.append("")
        if b.get("linear"):
            lines += ["### linear cost (W1 shape)", "", "| passages | system | passages/s | seconds |", "|---|---|---|---|"]
            for row in b["linear"]:
                lines.append(f"| {row['n']} | {row['system']} | {row.get('rate', float('nan')):.0f} | "
                             f"{row.get('seconds', float('nan')):.2f} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/speed_gpu")
    parser.add_argument("--data-root", default=str(DATA_ROOT))
    parser.add_argument("--ckpts", default="/tmp/speed_ckpts_gpu")
    parser.add_argument("--backbones", default="minilm,deberta-base,modernbert-base")
    parser.add_argument("--workloads", default="W1,W2,W3,W4,W5")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--budget-s", type=float, default=20.0, help="per workload: stop adding repeats past this")
    parser.add_argument("--linear", default="100,1000,10000", help="W1-shape sizes (first backbone only)")
    parser.add_argument("--systems", default=None, help="comma list of system names to keep (default: all)")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to smoke-test this script")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile (fp32, bf16) and CUDA graphs (compile='reduce-overhead')")
    args = parser.parse_args(argv)
    if args.systems:
        wanted, compiled_names = set(args.systems.split(",")), {spec_name(spec) for spec in COMPILED}
        unknown = wanted - {spec_name(spec) for spec in SYSTEMS} - compiled_names
        if unknown:
            parser.error(f"--systems: unknown {sorted(unknown)}; known: "
                         f"{', '.join(spec_name(spec) for spec in SYSTEMS + COMPILED)}")
        if not args.compile and compiled_names & wanted:
            parser.error(f"--systems names compiled systems ({sorted(compiled_names & wanted)}): add --compile")
    global CUDA
    CUDA = args.device.startswith("cuda")
    if CUDA and not torch.cuda.is_available():
        parser.error("no CUDA device: this benchmark times GPU paths (speed.py is the CPU one)")
    quiet()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import transformers

    report = {"gpu": torch.cuda.get_device_name(0) if CUDA else platform.processor() or "cpu", "torch": torch.__version__,
              "transformers": transformers.__version__, "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "args": vars(args), "backbones": {}}
    try:
        import flash_attn  # noqa: F401

        report["flash_attn"] = True
    except ImportError:
        report["flash_attn"] = False  # SDPA picks its fused (flash / memory-efficient) kernels itself

    corpus = Corpus(speed_ckpts._base_tokenizer(), data_root=Path(args.data_root))
    workloads = build_workloads(corpus, tuple(args.workloads.split(",")))

    def save():
        (out / "speed_gpu.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
        (out / "speed_gpu.md").write_text(markdown(report), encoding="utf-8")

    for i, bname in enumerate(args.backbones.split(",")):
        entry: dict = {"workloads": {}}
        report["backbones"][bname] = entry
        t0 = time.perf_counter()
        graphs_before = cudagraph_counters()
        try:
            gl_dir, ce_dir = speed_ckpts.build(bname, Path(args.ckpts))
            bb = Backbone(bname, gl_dir, ce_dir, device=args.device)
            specs = SYSTEMS + (COMPILED if args.compile else [])
            systems = {}
            entry["prepare_s"] = {}
            for spec in specs:
                name = spec_name(spec)
                if args.systems and name not in args.systems.split(","):
                    continue
                try:
                    started = time.perf_counter()
                    system = make_system(spec, bb)
                    system.prepare()
                    if spec.get("compile"):
                        system.r.warm_up()  # compilation (and graphs of its shapes) before any workload
                    sync()
                    entry["prepare_s"][name] = time.perf_counter() - started
                    systems[name] = system
                except Exception as error:
                    entry["workloads"].setdefault("_prepare_errors", {})[name] = f"{type(error).__name__}: {error}"[:300]
                    traceback.print_exc()
            for wname, w in workloads.items():
                res = bench_workload(systems, w, args.repeats, args.budget_s)
                res["_unit"], res["_description"] = w.unit, w.description
                entry["workloads"][wname] = res
                best = {n: round(r["median"]) for n, r in res.items() if not n.startswith("_") and "median" in r}
                print(f"[{time.perf_counter() - t0:6.1f}s] {bname} {wname} {best} {res['_checks']}", flush=True)
                save()
            entry["attn"] = bb.attn_info()
            if args.compile:  # skips > 0: some compiled graph ran without CUDA graphs (TORCH_LOGS=cudagraphs says why)
                after = cudagraph_counters()
                entry["cudagraph_counters"] = {k: v - graphs_before.get(k, 0) for k, v in after.items()}
            if i == 0 and args.linear:
                entry["linear"] = []
                for n in (int(x) for x in args.linear.split(",")):
                    lw = linear_workload(corpus, n)
                    for name in (OURS_DEFAULT, CE_REF):
                        if name not in systems:
                            continue
                        timed(systems[name], lw)  # warm-up at this size
                        dt, _ = timed(systems[name], lw)
                        entry["linear"].append({"n": n, "system": name, "seconds": dt, "rate": n / dt})
                        print(f"linear {n} {name} {n / dt:.0f}/s", flush=True)
                    save()
            del systems, bb
            if CUDA:
                torch.cuda.empty_cache()
        except Exception as error:
            entry["error"] = f"{type(error).__name__}: {error}"[:300]
            traceback.print_exc()
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        save()
    print(markdown(report))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
