"""speed.json -> speed.md (markdown tables) and PNG plots. Also runnable alone:

python -m benchmarks.speed.report /tmp/speed_results
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TARGETS_UP = {"W1": 2.0, "W2": 2.0, "W3": 3.0}
TARGETS_CE = {"W1": 1.0, "W3": 1.5, "W5": 4.0}


def _groups(s: dict) -> str:
    """'sequences (mean passages per sequence)' from a system's info, or ''."""
    info = s.get("info", {})
    return f"{info['groups']} ({info['mean_group']})" if "groups" in info else ""


def _f(x, nd=1):
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{nd}f}"


def _thr(s):
    return f"{_f(s['median'])} [{_f(s['min'])}-{_f(s['max'])}]"


def main_tables(res) -> list[str]:
    out = []
    for bb, exps in res["summary"].items():
        main = exps.get("main", {})
        if not main:
            continue
        out.append(
            f"\n### {bb}: throughput per workload (median [min-max] over {_reps(main)} runs, wall clock)\n"
        )
        out.append(
            "| workload | system | units/s | units per CPU-s | sequences (mean group) | vs upstream same groups | vs cross-encoder |"
        )
        out.append("|---|---|---|---|---|---|---|")
        for wn, systems in main.items():
            ce = systems.get("ce")
            for name, s in systems.items():
                up_name = (
                    name.replace("ours", "upstream", 1)
                    if s["family"] == "ours"
                    else None
                )
                up = systems.get(up_name) if up_name else None
                r_up = f"{s['median'] / up['median']:.2f}x" if up else ""
                r_ce = (
                    f"{s['median'] / ce['median']:.2f}x"
                    if ce and s["family"] in ("ours", "ours_nli")
                    else ""
                )
                grp = _groups(s)
                out.append(
                    f"| {wn} | {name} | {_thr(s)} | {_f(s['median_per_cpu_s'])} | {grp} | {r_up} | {r_ce} |"
                )
    return out


def _reps(main):
    ns = [s["n"] for systems in main.values() for s in systems.values()]
    return (
        f"{min(ns)}-{max(ns)}"
        if ns and min(ns) != max(ns)
        else (str(ns[0]) if ns else "0")
    )


def headline(res) -> list[str]:
    out = [
        "\n### Targets (ours with its defaults; ratios of medians from the same run, wall clock and per CPU-second)\n",
        (
            "| backbone | workload | ours units/s | upstream | cross-encoder | ours/upstream (wall, cpu) | target | "
            "ours/CE (wall, cpu) | target |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for bb, exps in res["summary"].items():
        for wn, systems in exps.get("main", {}).items():
            o, u, c = systems.get("ours"), systems.get("upstream"), systems.get("ce")
            if not o:
                continue

            def ratio(a, b):
                if not a or not b:
                    return "-"
                cpu = (
                    (a["median_per_cpu_s"] / b["median_per_cpu_s"])
                    if a["median_per_cpu_s"] and b["median_per_cpu_s"]
                    else None
                )
                return f"{a['median'] / b['median']:.2f}x, {_f(cpu, 2)}x"

            tu = TARGETS_UP.get(wn)
            tc = TARGETS_CE.get(wn)
            mu = ""
            if tu and u:
                mu = f">= {tu}x: {'met' if o['median'] / u['median'] >= tu else 'NOT met'}"
            mc = ""
            if tc and c:
                mc = f">= {tc}x: {'met' if o['median'] / c['median'] >= tc else 'NOT met'}"
            out.append(
                f"| {bb} | {wn} | {_f(o['median'])} | {_f(u['median']) if u else '-'} | "
                f"{_f(c['median']) if c else '-'} | {ratio(o, u)} | {mu} | {ratio(o, c)} | {mc} |"
            )
    return out


def checks(res) -> list[str]:
    rows = [c for c in res["checks"] if "max_abs_diff" in c]
    errs = [c for c in res["checks"] if "error" in c]
    out = [
        "\n### Score agreement (same groups)\n",
        "| backbone | workload | ours | other | max abs diff | equal (<1e-4) |",
        "|---|---|---|---|---|---|",
    ]
    for c in rows:
        out.append(
            f"| {c['backbone']} | {c['workload']} | {c['ours']} | {c['other']} | {c['max_abs_diff']:.1e} | {c['equal']} |"
        )
    for e in errs:
        out.append(
            f"\nSkipped: {e['backbone']} {e['workload']} {e['system']}: {e['error']}"
        )
    return out


def memory(res) -> list[str]:
    out = [
        "\n### Peak memory (fresh child process per row: RSS high-water mark during one run, reset after loading)\n",
        (
            "| backbone | workload | system | RSS after load (MB) | peak during run (MB) | increase during run (MB) | "
            "peak while loading (MB) | peak during run / CE's |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    ce_peak = {
        (m["backbone"], m["workload"]): m.get("peak_mb")
        for m in res["memory"]
        if m["system"] == "ce"
    }
    for m in res["memory"]:
        if "peak_mb" not in m:
            out.append(
                f"| {m['backbone']} | {m['workload']} | {m['system']} | error: {m.get('error', '')[:80]} |||||"
            )
            continue
        cp = ce_peak.get((m["backbone"], m["workload"]))
        rel = f"{m['peak_mb'] / cp:.2f}x" if cp else ""
        out.append(
            f"| {m['backbone']} | {m['workload']} | {m['system']} | {m['loaded_mb']:.0f} | {m['peak_mb']:.0f} | "
            f"{m['delta_mb']:.0f} | {m['load_peak_mb']:.0f} | {rel} |"
        )
    return out


def sweep(res, exp, title) -> list[str]:
    out = []
    for bb, exps in res["summary"].items():
        for wn, systems in exps.get(exp, {}).items():
            out.append(f"\n### {title}: {bb} {wn}\n")
            out.append("| system | units/s | per CPU-s | sequences (mean group) |")
            out.append("|---|---|---|---|")
            for name, s in systems.items():
                grp = _groups(s)
                out.append(
                    f"| {name} | {_thr(s)} | {_f(s['median_per_cpu_s'])} | {grp} |"
                )
    return out


def length_matrix(res) -> list[str]:
    out = []
    for bb, exps in res["summary"].items():
        ls = exps.get("length_sweep", {})
        if not ls:
            continue
        systems = []
        for wn, ss in ls.items():
            for n in ss:
                if n not in systems:
                    systems.append(n)
        out.append(
            f"\n### Passages/s against passage length ({bb}; 1 query x {_n(res, ls)} passages; "
            "median; `=` marks a packing identical to a smaller ppp, not re-timed)\n"
        )
        out.append("| passage tokens | " + " | ".join(systems) + " |")
        out.append("|---" * (len(systems) + 1) + "|")
        for wn, ss in ls.items():
            row = []
            for n in systems:
                s = ss.get(n)
                if s is None:
                    row.append("=")
                else:
                    mg = s.get("info", {}).get("mean_group")
                    row.append(_f(s["median"]) + (f" (g {mg})" if mg else ""))
            out.append(f"| {wn.replace('len', '')} | " + " | ".join(row) + " |")
    return out


def _n(res, ls):
    names = set(ls)
    for t in res["timings"]:
        if t["workload"] in names and t["experiment"] == "length_sweep":
            return t["units"]
    return ""


def linear(res) -> list[str]:
    if not res["linear"]:
        return []
    out = [
        "\n### Cost against number of passages (W1 shape, 1 run each)\n",
        "| backbone | system | passages | wall s | passages/s | per CPU-s | ms per passage |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["linear"]:
        out.append(
            f"| {r['backbone']} | {r['system']} | {r['n']} | {r['wall_s']:.1f} | {_f(r['per_s'])} | "
            f"{_f(r['per_cpu_s'])} | {1000 / r['per_s']:.0f} |"
        )
    return out


def drift(res) -> list[str]:
    if not res["drift"]:
        return []
    out = [
        "\n### int8 / compile: score drift against fp32 (random-weight model)\n",
        "| backbone | workload | system | reference | max abs diff | mean abs diff | Spearman | top-10 overlap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in res["drift"]:
        out.append(
            f"| {d['backbone']} | {d['workload']} | {d['system']} | {d['reference']} | {d['max_abs_diff']:.3g} | "
            f"{d['mean_abs_diff']:.3g} | {d['spearman']:.4f} | {d['top10_overlap']:.1f} |"
        )
    return out


def plots(res, out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["\n(matplotlib is not installed: no plots)"]
    made = []
    # throughput vs passages_per_pass (W3 short, and W1/W2 long)
    for bb, exps in res["summary"].items():
        main = exps.get("main", {})
        if "W3" not in main:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for fam, style in (("ours", "o-"), ("upstream", "s--")):
            pts = []
            for name, s in main["W3"].items():
                if s["family"] == fam:
                    p = s["spec"].get("ppp") or s["info"].get("passages_per_pass") or 8
                    pts.append((p, s["median"], s["min"], s["max"]))
            pts.sort()
            if pts:
                x = [p[0] for p in pts]
                ax.errorbar(
                    x,
                    [p[1] for p in pts],
                    yerr=[[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]],
                    fmt=style,
                    capsize=3,
                    label=f"{fam} (W3, ~30-token passages)",
                )
        for wn in ("W1", "W2"):
            if wn in main:
                pts = sorted(
                    (
                        (s["spec"].get("ppp") or s["info"].get("passages_per_pass")),
                        s["median"],
                    )
                    for n, s in main[wn].items()
                    if s["family"] == "ours"
                )
                if pts:
                    ax.plot(
                        [p[0] for p in pts],
                        [p[1] for p in pts],
                        "^-",
                        label=f"ours ({wn}, ~200-token passages)",
                    )
        for wn, ls in (("W3", ":"), ("W1", "-.")):
            if wn in main and "ce" in main[wn]:
                ax.axhline(
                    main[wn]["ce"]["median"],
                    linestyle=ls,
                    color="gray",
                    label=f"cross-encoder ({wn})",
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel(
            "passages_per_pass (cap; long passages are limited by max_length=512)"
        )
        made.append(_finish(fig, ax, f"{bb}: throughput vs passages_per_pass (2 CPU cores)", out / f"speed_ppp_{bb}.png"))
    for bb, exps in res["summary"].items():
        ls = exps.get("length_sweep", {})
        if not ls:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4))
        series = {}
        for wn, ss in ls.items():
            L = int(wn.replace("len", ""))
            for name, s in ss.items():
                series.setdefault(name, []).append((L, s["median"]))
        for name, pts in series.items():
            pts.sort()
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                "o-" if name != "ce" else "k--",
                label=name,
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("passage length (tokens)")
        made.append(_finish(fig, ax, f"{bb}: throughput vs passage length", out / f"speed_length_{bb}.png"))
    return ["\nPlots: " + ", ".join(made)] if made else []


def _finish(fig, ax, title: str, path: Path) -> str:
    """Label, lay out, save and close a throughput plot; its file name."""
    import matplotlib.pyplot as plt

    ax.set_ylabel("passages / s")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def write_report(res: dict, out: Path) -> Path:
    out = Path(out)
    m = res["meta"]
    lines = [
        f"# Speed results ({m['date_utc']})\n",
        f"Command: `{m['command']}`  ",
        (
            f"Machine: {m['cpus']} CPUs ({m['cpu']}), torch {m['torch']} with {m['torch_threads']} threads, "
            f"transformers {m.get('transformers')}, gliclass {m.get('gliclass')}, sentence-transformers "
            f"{m.get('sentence_transformers')}; load average {m['loadavg_start']} at start, "
            f"{m.get('loadavg_end')} at end (shared machine: compare ratios within a run, not absolute numbers).\n"
        ),
    ]
    if "workloads" in res:
        lines += [
            "| workload | description | units | mean passage tokens | mean query/claim tokens |",
            "|---|---|---|---|---|",
        ]
        for k, w in res["workloads"].items():
            lines.append(
                f"| {k} | {w['description']} | {w['units']} {w['unit']} | {w['mean_passage_tokens']} | "
                f"{w['mean_query_tokens']} |"
            )
    attn = {
        bb: s.get("attn_implementation") for bb, s in res.get("systems", {}).items()
    }
    lines.append(f"\nAttention implementations: {attn}")
    lines += headline(res)
    lines += main_tables(res)
    lines += checks(res)
    lines += memory(res)
    lines += sweep(res, "ml_sweep", "max_length sweep (passages_per_pass 32)")
    lines += sweep(res, "bs_sweep", "batch_size sweep")
    lines += sweep(
        res, "bs_long", "batch_size with long passages (tokens per forward pass)"
    )
    lines += sweep(res, "cache", "token-id cache, cold vs warm")
    lines += length_matrix(res)
    lines += sweep(res, "int8", "int8 dynamic quantisation")
    lines += sweep(res, "compile", "torch.compile")
    lines += drift(res)
    lines += linear(res)
    lines += plots(res, out)
    p = out / "speed.md"
    p.write_text("\n".join(lines) + "\n")
    return p


def main(argv: list[str] | None = None) -> None:
    """`python -m benchmarks.speed.report [FOLDER]`: rewrite FOLDER/speed.md and its plots from speed.json."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", nargs="?", default="/tmp/speed_results",
                        help="a results folder written by `python -m benchmarks.speed` (holds speed.json)")
    folder = Path(parser.parse_args(argv).folder)
    source = folder / "speed.json"
    if not source.is_file():
        parser.error(f"{source} does not exist: run python -m benchmarks.speed --out {folder} first")
    print(write_report(json.loads(source.read_text()), folder))


if __name__ == "__main__":
    main()
