"""The proof: fine-tune a GLiClass reranker from all-MiniLM-L6-v2 on SciFact train, rerank BM25 on SciFact test.

Systems on SciFact test (BM25 top-`--depth` candidates, title + text):
  bm25                      BM25 alone (bm25s, k1=1.5, b=0.75)
  minilm-cosine             all-MiniLM-L6-v2 embeddings, cosine (query and passage encoded apart)
  gliclass-untrained        the GLiClass model initialised from MiniLM, before any training step
  gliclass-scifact          the same after fine-tuning on SciFact train
  cross-encoder-same-budget a sentence-transformers CrossEncoder from MiniLM (fresh head), trained on the
                            very same groups (same steps, same positives and BM25 hard negatives, same LRs)
  published ms-marco CE     0.688 (BEIR paper, BM25 + cross-encoder/ms-marco-MiniLM-L-6-v2), quoted only
Then zero-shot transfer of the SciFact model to Cranfield and Medline (all their queries, BM25 top
`--transfer-depth` = 100, beside BM25, MiniLM cosine and the untrained model), and TrecQA (train -> dev,
MAP/MRR). One table puts SciFact (in domain) beside Cranfield and Medline (out of domain) and their mean,
through the code of `gliclass-rerank eval A B C` (`gliclass_rerank.evaluation.tables`).

    python -m benchmarks.quality.train_scifact --out /tmp/proof            # the full protocol
    python -m benchmarks.quality.train_scifact --out /tmp/proof --test-queries 100 --depth 30 --steps 100  # smaller

Everything lands in --out: report JSONs and charts per dataset, the models, `proof.json` and `proof.md`.
Needs the `eval` and `train` extras. Data: ../shared/data (never copied into the project).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.evaluation import (
    CrossEncoderScorer,
    EmbeddingScorer,
    GLiClassScorer,
    bm25_run,
    collection_table,
    evaluate_collections,
    evaluate_systems,
    format_table,
    load_dataset,
    plot_report,
    write_table,
)
from gliclass_rerank.loading import save_pretrained
from gliclass_rerank.training import (
    TrainArgs,
    Trainer,
    examples_from_beir,
    init_from_encoder,
    micro_batches,
    mixed_precision,
    optimizer_step,
    seed_everything,
)

from ..common import DATA_ROOT, minilm_dir

PUBLISHED_CE = 0.688  # BEIR paper (Thakur et al., 2021), BM25 + ms-marco MiniLM-L6 cross-encoder, SciFact NDCG@10
LOG = logging.getLogger("proof")


def stamp(t0: float) -> str:
    return f"[{(time.time() - t0) / 60:5.1f} min]"


# ------------------------------------------------------------------------------------ same-budget cross-encoder
def train_cross_encoder(encoder: str, examples, targs: TrainArgs, out: Path, max_len: int) -> dict:
    """A CrossEncoder (MiniLM + fresh 1-logit head) trained on exactly the GLiClass run's groups and steps."""
    from tqdm.auto import tqdm
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    seed_everything(targs.seed)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    model = AutoModelForSequenceClassification.from_pretrained(encoder, num_labels=1)
    device = torch.device("cuda" if torch.cuda.is_available() and targs.device != "cpu" else "cpu")
    model.to(device).train()
    head = [p for n, p in model.named_parameters() if n.startswith("classifier")]
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier")]
    optimizer = torch.optim.AdamW([{"params": body, "lr": targs.encoder_lr, "weight_decay": targs.weight_decay},
                                   {"params": head, "lr": targs.head_lr, "weight_decay": 0.0}])
    total = targs.max_steps
    scheduler = get_linear_schedule_with_warmup(optimizer, round(targs.warmup_ratio * total), total)
    amp_dtype, scaler = mixed_precision(device, targs.precision)  # the GLiClass run's precision, for a fair budget
    stream = micro_batches(examples, targs, True)
    losses = []
    started = time.perf_counter()
    for _ in tqdm(range(total), desc="train cross-encoder", unit="step"):
        optimizer.zero_grad(set_to_none=True)
        for _ in range(targs.grad_accum):
            groups = next(stream)
            queries = [q for q, labels, _ in groups for _ in labels]
            passages = [p for _, labels, _ in groups for p in labels]
            targets = torch.tensor([t for _, _, ts in groups for t in ts], dtype=torch.float32, device=device)
            enc = tokenizer(queries, passages, truncation="only_second", max_length=max_len, padding=True,
                            return_tensors="pt").to(device)
            with torch.autocast("cuda", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(**enc).logits[:, 0]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets) / targs.grad_accum
            (scaler.scale(loss) if scaler else loss).backward()
            losses.append(float(loss.detach()) * targs.grad_accum)
        optimizer_step(optimizer, targs.max_grad_norm, scaler)
        scheduler.step()
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return {"steps": total, "seconds": round(time.perf_counter() - started, 1), "first_loss": losses[0],
            "last_loss": sum(losses[-10:]) / len(losses[-10:])}


# ------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DATA_ROOT))
    parser.add_argument("--encoder", default=None, help="plain encoder folder (default: all-MiniLM-L6-v2 wheel)")
    parser.add_argument("--out", default="/tmp/proof")
    parser.add_argument("--test-queries", type=int, default=None, help="first N SciFact test queries (default all 300)")
    parser.add_argument("--depth", type=int, default=100, help="BM25 candidates reranked per query")
    parser.add_argument("--max-passage-tokens", type=int, default=128)
    parser.add_argument("--passages-per-pass", type=int, default=1)
    parser.add_argument("--group-size", type=int, default=4, help="passages per training query (1 positive + negatives)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4, help="training queries per step")
    parser.add_argument("--encoder-lr", type=float, default=3e-5)
    parser.add_argument("--head-lr", type=float, default=1e-4)
    parser.add_argument("--logit-scale", type=float, default=20.0)
    parser.add_argument("--negatives", type=int, default=20, help="BM25 hard negatives kept per training query")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=("fp32", "auto", "bf16", "fp16"), default="fp32",
                        help="training precision on a GPU (fp32 by default: the bf16-autocast run of 2026-11-26 "
                             "scored 0.6995 against fp32's 0.7115, and MiniLM trains in seconds on a GPU anyway)")
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--skip", nargs="*", default=[],
                        help="stages to skip: minilm untrained cross-encoder transfer trecqa")
    parser.add_argument("--trecqa-steps", type=int, default=60)
    parser.add_argument("--transfer-queries", type=int, default=None, help="first N Cranfield / Medline queries")
    parser.add_argument("--transfer-depth", type=int, default=100,
                        help="BM25 candidates reranked per Cranfield / Medline query (default 100)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_root = Path(args.data_root)
    encoder = args.encoder or str(minilm_dir())
    device = args.device
    proof: dict = {"args": vars(args), "torch_threads": torch.get_num_threads(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                   "device": "cuda" if torch.cuda.is_available() and device != "cpu" else "cpu", "stages": {}}

    def save():
        proof["elapsed_min"] = round((time.time() - t0) / 60, 2)
        (out / "proof.json").write_text(json.dumps(proof, indent=2), encoding="utf-8")
        write_markdown(proof, out / "proof.md")

    def gliclass(path, name, **extra):
        model = GLiClassReranker.from_pretrained(str(path), device=device, passages_per_pass=args.passages_per_pass,
                                                 max_passage_tokens=args.max_passage_tokens,
                                                 batch_size=args.eval_batch_size, **extra)
        return GLiClassScorer(model, name=name)

    # ---- SciFact data, BM25 first stage
    scifact_dir = data_root / "beir_scifact"
    test = load_dataset(scifact_dir, split="test").subset(args.test_queries)
    test_run = bm25_run(test, top_k=max(100, args.depth), show_progress=False)
    LOG.info("%s SciFact test: %d queries, BM25 done", stamp(t0), len(test.queries))

    # ---- the new model, untrained
    init_dir = out / "gliclass-minilm-init"
    model, tokenizer = init_from_encoder(encoder, logit_scale=args.logit_scale)
    save_pretrained(model.eval(), tokenizer, init_dir)
    systems = []
    if "minilm" not in args.skip:
        systems.append(EmbeddingScorer(encoder, name="minilm-cosine", batch_size=args.eval_batch_size))
    if "untrained" not in args.skip:
        systems.append(gliclass(init_dir, "gliclass-untrained"))
    scifact_systems: dict = {}

    def run_eval(data, run, rerankers, tag, depth):
        report = evaluate_systems(data, run, rerankers, depth=depth, out_dir=out / f"eval-{tag}")
        for name, s in report["systems"].items():
            LOG.info("%s %s %-28s %s (%.0fs)", stamp(t0), tag, name,
                     " ".join(f"{k}={v:.4f}" for k, v in s["metrics"].items()), s["seconds"])
        return report

    report = run_eval(test, test_run, systems, "scifact-baselines", args.depth)
    for name, s in report["systems"].items():
        scifact_systems[name] = {"metrics": s["metrics"], "seconds": s["seconds"]}
    proof["stages"]["scifact"] = {"queries": len(test.queries), "depth": args.depth, "systems": scifact_systems}
    save()

    # ---- fine-tune on SciFact train
    targs = TrainArgs(init=encoder, output_dir=str(out / "gliclass-scifact"), passages_per_pass=args.passages_per_pass,
                      group_size=args.group_size, max_passage_tokens=args.max_passage_tokens, batch_size=args.batch_size,
                      max_steps=args.steps, encoder_lr=args.encoder_lr, head_lr=args.head_lr,
                      logit_scale=args.logit_scale, negatives=args.negatives, seed=args.seed, device=device,
                      precision=args.precision)
    train_examples = examples_from_beir(scifact_dir, "train", negatives=args.negatives, bm25_depth=args.negatives + 30,
                                        show_progress=False)
    LOG.info("%s SciFact train: %d queries with positives and hard negatives", stamp(t0), len(train_examples))
    model, tokenizer = init_from_encoder(encoder, logit_scale=args.logit_scale)
    trainer = Trainer(targs, train_examples, retrieval=True, model=model, tokenizer=tokenizer)
    summary = trainer.run()
    LOG.info("%s GLiClass trained: %s", stamp(t0), summary)
    proof["stages"]["train_scifact"] = summary
    save()
    report = run_eval(test, test_run, [gliclass(targs.output_dir, "gliclass-scifact")], "scifact-trained", args.depth)
    scifact_systems["gliclass-scifact"] = {k: report["systems"]["gliclass-scifact"][k] for k in ("metrics", "seconds")}
    save()

    # ---- same-budget cross-encoder
    if "cross-encoder" not in args.skip:
        ce_dir = out / "cross-encoder-scifact"
        ce_len = 3 + targs.max_query_tokens + args.max_passage_tokens
        ce_summary = train_cross_encoder(encoder, train_examples, targs, ce_dir, ce_len)
        LOG.info("%s cross-encoder trained: %s", stamp(t0), ce_summary)
        proof["stages"]["train_cross_encoder"] = ce_summary
        report = run_eval(test, test_run, [CrossEncoderScorer(ce_dir, name="cross-encoder-same-budget",
                                                              max_length=ce_len, batch_size=args.eval_batch_size)],
                          "scifact-ce", args.depth)
        scifact_systems["cross-encoder-same-budget"] = {
            k: report["systems"]["cross-encoder-same-budget"][k] for k in ("metrics", "seconds")}
        save()
    scifact_systems["published: BM25 + ms-marco-MiniLM-L6 CE (BEIR paper)"] = {"metrics": {"ndcg@10": PUBLISHED_CE},
                                                                             "seconds": None}
    chart = {"dataset": "scifact", "judged_queries": len(test.qrels), "depth": args.depth, "metrics": ["ndcg@10"],
             "systems": {k: {"metrics": {"ndcg@10": v["metrics"]["ndcg@10"]}} for k, v in scifact_systems.items()}}
    plot_report(chart, out / "scifact_ndcg10.png", title=f"SciFact test NDCG@10 ({len(test.qrels)} queries, "
                f"BM25 top-{args.depth} reranked)")
    save()

    # ---- zero-shot transfer: Cranfield, Medline
    if "transfer" not in args.skip:
        collections = [load_dataset(data_root / name, split="test").subset(args.transfer_queries)
                       for name in ("cranfield", "medline")]
        rerankers = [gliclass(targs.output_dir, "gliclass-scifact")]
        if "untrained" not in args.skip:
            rerankers.insert(0, gliclass(init_dir, "gliclass-untrained"))
        if "minilm" not in args.skip:
            rerankers.insert(0, EmbeddingScorer(encoder, name="minilm-cosine", batch_size=args.eval_batch_size))
        reports = evaluate_collections(collections, rerankers, depth=args.transfer_depth, out_dir=out / "eval-transfer",
                                       show_progress=False)
        for name, report in reports.items():
            for system, s in report["systems"].items():
                LOG.info("%s %s %-28s %s (%.0fs)", stamp(t0), name, system,
                         " ".join(f"{k}={v:.4f}" for k, v in s["metrics"].items()), s["seconds"])
            proof["stages"][name] = {"queries": report["queries"], "depth": args.transfer_depth, "systems": {
                k: {"metrics": v["metrics"], "seconds": v["seconds"]} for k, v in report["systems"].items()}}
        # In and out of domain in one table: SciFact test beside Cranfield and Medline, and their mean.
        table = collection_table({name: proof["stages"][name] for name in ("scifact", "cranfield", "medline")},
                                 "ndcg@10")
        proof["domain_table"] = dict(table, depths={"scifact": args.depth, "cranfield": args.transfer_depth,
                                                    "medline": args.transfer_depth})
        write_table(table, out, stem="domain_table")
        LOG.info("%s in and out of domain:\n%s", stamp(t0), format_table(table))
        save()

    # ---- TrecQA: train on train, evaluate dev (MAP / MRR)
    if "trecqa" not in args.skip:
        qa_train = examples_from_jsonl_trecqa(data_root / "trecqa" / "train.jsonl")
        qargs = TrainArgs(init=encoder, output_dir=str(out / "gliclass-trecqa"), passages_per_pass=args.passages_per_pass,
                          group_size=args.group_size, max_passage_tokens=args.max_passage_tokens,
                          batch_size=args.batch_size, max_steps=args.trecqa_steps, encoder_lr=args.encoder_lr,
                          head_lr=args.head_lr, logit_scale=args.logit_scale, seed=args.seed, device=device,
                          precision=args.precision)
        model, tokenizer = init_from_encoder(encoder, logit_scale=args.logit_scale)
        qa_summary = Trainer(qargs, qa_train, retrieval=True, model=model, tokenizer=tokenizer).run()
        proof["stages"]["train_trecqa"] = qa_summary
        dev = load_dataset(data_root / "trecqa" / "dev.jsonl")
        dev_run = bm25_run(dev, candidates={q: list(d) for q, d in dev.candidates.items()}, show_progress=False)
        rerankers = [gliclass(qargs.output_dir, "gliclass-trecqa")]
        if "untrained" not in args.skip:
            rerankers.insert(0, gliclass(init_dir, "gliclass-untrained"))
        if "minilm" not in args.skip:
            rerankers.insert(0, EmbeddingScorer(encoder, name="minilm-cosine"))
        report = evaluate_systems(dev, dev_run, rerankers, depth=1000, metrics=("map", "mrr", "ndcg@10"),
                                  out_dir=out / "eval-trecqa-dev")
        proof["stages"]["trecqa_dev"] = {"queries": len(dev.queries), "systems": {
            k: {"metrics": v["metrics"], "seconds": v["seconds"]} for k, v in report["systems"].items()}}
        for name, s in report["systems"].items():
            LOG.info("%s trecqa-dev %-22s %s", stamp(t0), name, " ".join(f"{k}={v:.4f}" for k, v in s["metrics"].items()))
    save()
    LOG.info("%s done: %s", stamp(t0), out / "proof.md")
    return 0


def examples_from_jsonl_trecqa(path: Path):
    """TrecQA train as {query, positives, negatives} examples (questions with both kinds only)."""
    from gliclass_rerank.evaluation.data import read_jsonl
    from gliclass_rerank.training import TrainExample

    out = []
    for item in read_jsonl(path):
        pos = [c["text"] for c in item["candidates"] if c["label"] > 0]
        neg = [c["text"] for c in item["candidates"] if c["label"] <= 0]
        if pos and neg:
            out.append(TrainExample(item["query"], pos + neg, [1.0] * len(pos) + [0.0] * len(neg)))
    return out


def write_markdown(proof: dict, path: Path) -> None:
    title = (f"# train_scifact proof ({proof.get('started')}, {proof.get('device')}, "
             f"{proof.get('torch_threads')} torch threads, {proof.get('elapsed_min')} min)")
    lines = [title, ""]
    lines.append("args: `" + json.dumps(proof["args"]) + "`")
    if "domain_table" in proof:
        table = proof["domain_table"]
        depths = ", ".join(f"{name} top {depth}" for name, depth in table["depths"].items())
        lines += ["", "## in domain (SciFact test) and out of domain (Cranfield, Medline)", "",
                  f"NDCG@10, BM25 candidates reranked: {depths}; mean over the three collections.", "",
                  format_table(table, markdown=True)]
    for stage, value in proof["stages"].items():
        lines += ["", f"## {stage}", ""]
        if isinstance(value, dict) and "systems" in value:
            metrics = sorted({m for s in value["systems"].values() for m in s["metrics"]})
            lines.append("| system | " + " | ".join(metrics) + " | seconds |")
            lines.append("|---|" + "---|" * (len(metrics) + 1))
            for name, s in value["systems"].items():
                cells = [f"{s['metrics'][m]:.4f}" if m in s["metrics"] else "" for m in metrics]
                lines.append(f"| {name} | " + " | ".join(cells) + f" | {s.get('seconds')} |")
        else:
            lines.append("`" + json.dumps(value) + "`")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
