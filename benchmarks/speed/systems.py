"""The systems the speed benchmark times, each built from a small spec dict so that a child process can
rebuild exactly the same one (peak-memory runs).

A spec is `{"family": ..., "ppp": int|None, "bs": int|None, "ml": int|None, "quantize": str|None,
"compile": bool|str}` (`compile`: the core's option, True or a torch.compile mode); `family` is one of

- `ours`: `GLiClassReranker` listwise (`score` / `rerank_batch`); W5: `entailment`;
- `ours_nli`: `GLiClassReranker` NLI mode (each passage a premise, the query its hypothesis); W5: `entailment`;
- `upstream`: `gliclass.ZeroShotClassificationPipeline` on the same checkpoint, fed exactly the groups the
  `ours` spec with the same ppp/bs/ml packs (so the scores must agree);
- `chunking`: `gliclass.ZeroShotClassificationWithChunkingPipeline`, `labels_chunk_size` = the largest group
  ours packs, one call per query (it takes one label list for all its texts);
- `ce`: sentence-transformers `CrossEncoder` on the same backbone config, `predict(pairs, batch_size=bs or 32)`.

`run(workload)` returns the scores as one list per query (W5: per premise), in input order.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from ..common import quiet_transformers

warnings.filterwarnings("ignore")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# How a spec's `compile` shows in its name: True and "default" are the same compilation.
COMPILE_NAMES = {True: "compile", "default": "compile", "reduce-overhead": "cudagraphs",
                 "max-autotune": "max-autotune", "max-autotune-no-cudagraphs": "max-autotune-nocudagraphs"}


def cross_encoder(folder, device: str, dtype: str = "float32"):
    """A sentence-transformers `CrossEncoder` (1 logit) of `folder`, its weights in `dtype`."""
    from sentence_transformers import CrossEncoder

    kwargs = {} if dtype == "float32" else {"model_kwargs": {"dtype": getattr(torch, dtype)}}
    return CrossEncoder(str(folder), num_labels=1, device=device, **kwargs)


def spec_name(spec: dict) -> str:
    fam = spec["family"]
    bits = [fam]
    if spec.get("ppp") is not None:
        bits.append(f"ppp{spec['ppp']}")
    if spec.get("ml") is not None:
        bits.append(f"ml{spec['ml']}")
    if spec.get("bs") is not None:
        bits.append(f"bs{spec['bs']}")
    if "tl" in spec:
        bits.append(f"tl{spec['tl'] or 'none'}")
    if "mbt" in spec:
        bits.append(f"mbt{spec['mbt'] or 'none'}")
    if spec.get("dtype") and spec["dtype"] != "float32":
        bits.append(spec["dtype"])
    if spec.get("quantize"):
        bits.append(spec["quantize"])
    if spec.get("compile"):
        bits.append(COMPILE_NAMES.get(spec["compile"], f"compile-{spec['compile']}"))  # the core refuses a bad one
    if spec.get("tag"):
        bits.append(spec["tag"])
    return "-".join(bits)


class Backbone:
    """Everything loaded once per backbone and shared between the systems that can share it."""

    def __init__(self, name: str, gl_dir, ce_dir, device: str = "cpu"):
        self.name, self.gl_dir, self.ce_dir = name, str(gl_dir), str(ce_dir)
        self.device = device  # "cpu" or "cuda": every system of this backbone runs there
        self._core_models: dict = {}  # dtype -> model (a reranker casts its model in place: one per dtype)
        self._tok = None
        self._upstream_models: dict = {}
        self._upstream_tok = None
        self._ces: dict = {}
        self._wrappers = {}

    @staticmethod
    def _any(loaded: dict):
        """The float32 one if loaded, else any (for `attn_info`), else None."""
        if "float32" in loaded:
            return loaded["float32"]
        return next(iter(loaded.values()), None)

    @property
    def _core_model(self):
        return self._any(self._core_models)

    @property
    def _upstream_model(self):
        return self._any(self._upstream_models)

    @property
    def _ce(self):
        return self._any(self._ces)

    @property
    def pipeline_device(self) -> str:
        return "cuda:0" if self.device.startswith("cuda") else "cpu"

    # ---------------------------------------------------------------- ours
    def core(self, dtype: str = "float32"):
        from gliclass_rerank.loading import load_config, load_model, load_tokenizer

        if dtype not in self._core_models:
            cfg = load_config(self.gl_dir)
            self._core_models[dtype] = load_model(self.gl_dir, config=cfg)
            self._tok = load_tokenizer(self.gl_dir)
        return self._core_models[dtype], self._tok

    def ours(self, spec: dict):
        """A `GLiClassReranker`; fp32 ones share one model (the wrapper only adds packing options)."""
        from gliclass_rerank import GLiClassReranker

        key = (
            spec.get("ppp"),
            spec.get("bs"),
            spec.get("ml"),
            spec.get("tl", "default"),
            spec.get("mbt", "default"),
            spec.get("quantize"),
            COMPILE_NAMES.get(spec.get("compile") or False),  # one reranker per distinct compilation
            bool(spec.get("warm_cache")),
            spec.get("dtype", "float32"),
        )
        if key in self._wrappers:
            return self._wrappers[key]
        opts = {}
        if spec.get("ppp") is not None:
            opts["passages_per_pass"] = spec["ppp"]
        if spec.get("bs") is not None:
            opts["batch_size"] = spec["bs"]
        if spec.get("ml") is not None:
            opts["max_length"] = spec["ml"]
        # A sweep over passages_per_pass measures the count alone: no packing target unless "tl" says so.
        if "tl" in spec or spec.get("ppp") is not None:
            opts["target_length"] = spec.get("tl")
        if "mbt" in spec or spec.get("bs") is not None:
            opts["max_batch_tokens"] = spec.get("mbt")
        if spec.get("quantize") or spec.get("compile"):
            # these replace model.encoder_model: never on the shared model
            r = GLiClassReranker.from_pretrained(
                self.gl_dir,
                device=self.device,
                dtype=spec.get("dtype", "float32"),
                quantize=spec.get("quantize"),
                compile=spec.get("compile") or False,  # True or a torch.compile mode
                **opts,
            )
        else:
            model, tok = self.core(spec.get("dtype", "float32"))
            r = GLiClassReranker(
                model,
                tok,
                device=self.device,
                dtype=spec.get("dtype", "float32"),
                name_or_path=self.gl_dir,
                **opts,
            )
        self._wrappers[key] = r
        return r

    # ---------------------------------------------------------------- upstream
    def upstream(self, dtype: str = "float32"):
        if dtype not in self._upstream_models:
            from gliclass import GLiClassModel
            from transformers import AutoTokenizer

            quiet_transformers()  # importing gliclass resets transformers' verbosity
            model = GLiClassModel.from_pretrained(self.gl_dir).eval()
            # upstream has no dtype option: a GPU user casts the loaded model
            self._upstream_models[dtype] = model.to(getattr(torch, dtype))
            self._upstream_tok = AutoTokenizer.from_pretrained(self.gl_dir)
        return self._upstream_models[dtype], self._upstream_tok

    def ce(self, dtype: str = "float32"):
        if dtype not in self._ces:
            self._ces[dtype] = cross_encoder(self.ce_dir, self.device, dtype)
        return self._ces[dtype]

    def attn_info(self) -> dict:
        out = {}
        if self._core_model is not None:
            out["ours"] = getattr(
                self._core_model.encoder_model.config, "_attn_implementation", None
            )
        if self._upstream_model is not None:
            out["upstream"] = getattr(
                self._upstream_model.model.encoder_model.config,
                "_attn_implementation",
                None,
            )
        if self._ce is not None:
            out["ce"] = getattr(self._ce.model.config, "_attn_implementation", None)
        return out


# -------------------------------------------------------------------- grouping (mirrors the core's packing)
def ours_groups(r, query: str, passages: list[str]) -> list[list[int]]:
    """Indices of the passages the core packs into each sequence for (query, passages), listwise."""
    from gliclass_rerank.packing import pack_task

    q_ids = r.pieces.texts([query])[0].ids[: r.max_query_tokens]
    labels = r.pieces.labels(list(passages))
    seqs, _ = pack_task(0, q_ids, labels, r.layout, r.max_length, r.passages_per_pass,
                        getattr(r, "target_length", None))
    return [list(s.labels) for s in seqs]


def ours_text_groups(r, text: str, labels: list[str]) -> list[list[int]]:
    """Groups for a text read with all its labels (NLI / entailment / classify path)."""
    from gliclass_rerank.packing import pack_task, text_budget

    pieces = r.pieces.labels(list(labels))
    needed = sum(1 + min(len(p.ids), r.max_query_tokens) for p in pieces)
    budget = text_budget(r.layout, r.max_length, needed)
    if r.max_passage_tokens is not None:
        budget = min(budget, r.max_passage_tokens)
    t_ids = r.pieces.texts([text])[0].ids[:budget]
    seqs, _ = pack_task(0, t_ids, pieces, r.layout, r.max_length, None)
    return [list(s.labels) for s in seqs]


# -------------------------------------------------------------------- systems
class System:
    def __init__(self, spec: dict, bb: Backbone):
        self.spec, self.bb, self.name = spec, bb, spec_name(spec)
        self.family = spec["family"]
        self.info: dict = {}

    def prepare(self):  # load what is needed (not timed)
        pass

    def before_run(self):  # not timed: reset caches so every timed run is cold
        pass

    def run(self, w) -> list[list[float]]:
        raise NotImplementedError

    def supports(self, w) -> bool:
        return True


class Ours(System):
    def prepare(self):
        self.r = self.bb.ours(self.spec)
        self.info = {
            "passages_per_pass": self.r.passages_per_pass,
            "max_length": self.r.max_length,
            "batch_size": self.r.batch_size,
        }

    def before_run(self):
        if not self.spec.get(
            "warm_cache"
        ):  # default: cold token-id cache, as for never-seen passages
            self.r.pieces.clear_cache()

    def run(self, w):
        r = self.r
        if w.claims:  # W5: each premise read once with all its claims
            return r.entailment([p[0] for p in w.passages], w.claims)
        mode = "nli" if self.family == "ours_nli" else "listwise"
        if len(w.queries) == 1:
            return [r.score(w.queries[0], w.passages[0], mode=mode)]
        results = r.rerank_batch(w.queries, w.passages, mode=mode)
        out = []
        for res, ps in zip(results, w.passages):
            s = [0.0] * len(ps)
            for x in res:
                s[x.index] = x.score
            out.append(s)
        return out

    def group_sizes(self, w) -> list[int]:
        r = self.r
        if w.claims:
            return [
                len(g)
                for p, c in zip(w.passages, w.claims)
                for g in ours_text_groups(r, p[0], c)
            ]
        if self.family == "ours_nli":
            return [1] * w.n_units
        return [
            len(g)
            for q, ps in zip(w.queries, w.passages)
            for g in ours_groups(r, q, ps)
        ]


class Upstream(System):
    """Upstream pipeline fed the very groups the matching `ours` spec packs."""

    def prepare(self):
        from gliclass import ZeroShotClassificationPipeline

        model, tok = self.bb.upstream(self.spec.get("dtype", "float32"))
        preset = self.spec.get(
            "_preset"
        )  # memory child: plans computed by the parent, no core model loaded
        if preset:
            self.r = None
            self.bs, ml = preset["batch_size"], preset["max_length"]
            self._plans = {
                k: (v["texts"], v["groups"], [(a, b) for a, b in v["where"]])
                for k, v in preset["plans"].items()
            }
        else:
            # grouping only: the fp32 wrapper packs exactly as any other dtype's
            self.r = self.bb.ours(dict(self.spec, family="ours", dtype="float32"))
            self.bs, ml = self.r.batch_size, self.r.max_length
            self._plans = {}
        self.pipe = ZeroShotClassificationPipeline(
            model, tok, max_length=ml, device=self.bb.pipeline_device, progress_bar=False
        )
        self.info = {"batch_size": self.bs, "max_length": ml}

    def preset(self, names) -> dict:
        return {
            "batch_size": self.bs,
            "max_length": self.info["max_length"],
            "plans": {
                n: {"texts": t, "groups": g, "where": wh}
                for n, (t, g, wh) in self._plans.items()
                if n in names
            },
        }

    def plan(self, w):
        """(texts, label groups, where each group's scores go) — built outside the timed region."""
        if w.name in self._plans:
            return self._plans[w.name]
        texts, groups, where = [], [], []
        if w.claims:
            for qi, (p, cl) in enumerate(zip(w.passages, w.claims)):
                for g in ours_text_groups(self.r, p[0], cl):
                    texts.append(p[0])
                    groups.append([cl[i] for i in g])
                    where.append((qi, g))
        else:
            for qi, (q, ps) in enumerate(zip(w.queries, w.passages)):
                for g in ours_groups(self.r, q, ps):
                    texts.append(q)
                    groups.append([ps[i] for i in g])
                    where.append((qi, g))
        self.r.pieces.clear_cache()
        self._plans[w.name] = (texts, groups, where)
        return self._plans[w.name]

    def run(self, w):
        texts, groups, where = self.plan(w)
        res = self.pipe(texts, groups, threshold=0.0, batch_size=self.bs)
        out = [[0.0] * len(c) for c in (w.claims or w.passages)]
        for preds, (qi, g) in zip(res, where):
            assert len(preds) == len(g), (
                "upstream dropped labels (threshold 0 keeps all)"
            )
            for pred, i in zip(preds, g):
                out[qi][i] = pred["score"]
        return out


class Chunking(System):
    def prepare(self):
        from gliclass import ZeroShotClassificationWithChunkingPipeline

        model, tok = self.bb.upstream(self.spec.get("dtype", "float32"))
        preset = self.spec.get("_preset")
        if preset:
            self.r = None
            self.bs, ml, self._k = (
                preset["batch_size"],
                preset["max_length"],
                dict(preset["k"]),
            )
        else:
            self.r = self.bb.ours(dict(self.spec, family="ours", dtype="float32"))
            self.bs, ml, self._k = self.r.batch_size, self.r.max_length, {}
        self.ml = ml
        self.pipe = ZeroShotClassificationWithChunkingPipeline(
            model, tok, max_length=ml, device=self.bb.pipeline_device, progress_bar=False
        )
        self.info = {"batch_size": self.bs, "max_length": ml}

    def preset(self, names) -> dict:
        return {
            "batch_size": self.bs,
            "max_length": self.ml,
            "k": {n: k for n, k in self._k.items() if n in names},
        }

    def k_for(self, w):
        if w.name not in self._k:
            if w.claims:
                sizes = [
                    len(g)
                    for p, c in zip(w.passages, w.claims)
                    for g in ours_text_groups(self.r, p[0], c)
                ]
            else:
                sizes = [
                    len(g)
                    for q, ps in zip(w.queries, w.passages)
                    for g in ours_groups(self.r, q, ps)
                ]
            self.r.pieces.clear_cache()
            self._k[w.name] = max(sizes)
        self.info = {
            "labels_chunk_size": self._k[w.name],
            "max_length": self.ml,
            "batch_size": self.bs,
        }
        return self._k[w.name]

    def run(self, w):
        k = self.k_for(w)
        out = []
        if w.claims:
            items = [(p[0], cl) for p, cl in zip(w.passages, w.claims)]
        else:
            items = list(zip(w.queries, w.passages))
        for text, labels in items:
            res = self.pipe(
                [text],
                list(labels),
                threshold=0.0,
                batch_size=self.bs,
                labels_chunk_size=k,
            )[0]
            d = {x["label"]: x["score"] for x in res}
            out.append([d[x] for x in labels])
        return out


class CE(System):
    def prepare(self):
        self.ce = self.bb.ce(self.spec.get("dtype", "float32"))
        self.bs = self.spec.get("bs") or 32
        self.info = {"batch_size": self.bs, "max_length": self.ce.max_length}

    def run(self, w):
        pairs = w.pairs()
        s = self.ce.predict(pairs, batch_size=self.bs, show_progress_bar=False)
        s = np.asarray(s, dtype=np.float64).reshape(-1).tolist()
        out, i = [], 0
        for group in w.claims or w.passages:
            out.append(s[i : i + len(group)])
            i += len(group)
        return out


FAMILIES = {
    "ours": Ours,
    "ours_nli": Ours,
    "upstream": Upstream,
    "chunking": Chunking,
    "ce": CE,
}


def make_system(spec: dict, bb: Backbone) -> System:
    return FAMILIES[spec["family"]](spec, bb)


def max_abs_diff(a: list[list[float]], b: list[list[float]]) -> float:
    fa = np.concatenate([np.asarray(x, dtype=np.float64) for x in a])
    fb = np.concatenate([np.asarray(x, dtype=np.float64) for x in b])
    return float(np.max(np.abs(fa - fb))) if fa.size else 0.0


def quiet():
    quiet_transformers()
    torch.set_grad_enabled(False)
