"""W1 on CPU, taken apart: packed-batch shapes and token counts, preparation time, encoder-only and full
forward time for ours against the CrossEncoder on the same backbone, then the end-to-end calls.

    python -m benchmarks.speed.profile_w1
"""

import argparse
import statistics
import time

import torch

from . import ckpts as speed_ckpts
from .data import Corpus, build_workloads
from .systems import Backbone, make_system, quiet

argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
quiet()
gl, ce = speed_ckpts.build("minilm")
bb = Backbone("minilm", gl, ce)
w = build_workloads(Corpus(speed_ckpts._base_tokenizer()), ("W1",))["W1"]
ours = make_system({"family": "ours"}, bb)
ours.prepare()
cesys = make_system({"family": "ce"}, bb)
cesys.prepare()
r = ours.r
from gliclass_rerank.packing import collate, plan_batches

q, ps = w.queries[0], w.passages[0]


def our_batches():
    r.pieces.clear_cache()
    seqs, _ = r.packing_rules.query_with_passages(0, r.pieces.texts([q])[0], r.pieces.labels(list(ps)))
    plan = plan_batches(seqs, r.batch_size, r.max_batch_tokens)
    return [collate([seqs[i] for i in idx], r.layout.pad_id) for idx in plan]


m = cesys.ce


def ce_batches():
    pairs = [(q, p) for p in ps]
    out = []
    for i in range(0, len(pairs), 32):
        chunk = pairs[i : i + 32]
        out.append(
            m.tokenizer(
                [a for a, _ in chunk],
                [b for _, b in chunk],
                padding=True,
                truncation=True,
                return_tensors="pt",
                max_length=512,
            )
        )
    return out


def t(f, n=5):
    ts = []
    for _ in range(n):
        s = time.perf_counter()
        f()
        ts.append(time.perf_counter() - s)
    return statistics.median(ts)


ob = our_batches()
cb = ce_batches()
print(
    "ours: batches",
    len(ob),
    "shapes",
    [tuple(b.input_ids.shape) for b in ob],
    "tokens",
    sum(int(b.attention_mask.sum()) for b in ob),
    "padded",
    sum(b.input_ids.numel() for b in ob),
)
print(
    "ce:   batches",
    len(cb),
    "shapes",
    [tuple(b["input_ids"].shape) for b in cb],
    "tokens",
    sum(int(b["attention_mask"].sum()) for b in cb),
    "padded",
    sum(b["input_ids"].numel() for b in cb),
)
print("prep ours %.3f s, ce %.3f s" % (t(our_batches), t(ce_batches)))
model = r.model


def fw_ours():
    with torch.inference_mode():
        for b in ob:
            model(b)


def enc_ours():
    with torch.inference_mode():
        for b in ob:
            model.encoder_model(input_ids=b.input_ids, attention_mask=b.attention_mask)


def fw_ce():
    with torch.inference_mode():
        for b in cb:
            m.model(**b)


for rep in range(2):
    print(
        "forward ours %.3f enc-only %.3f ce %.3f"
        % (t(fw_ours, 3), t(enc_ours, 3), t(fw_ce, 3))
    )
print(
    "end-to-end ours %.3f ce %.3f"
    % (t(lambda: ours.run(w), 3), t(lambda: cesys.run(w), 3))
)
