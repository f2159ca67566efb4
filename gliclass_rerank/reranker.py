"""`GLiClassReranker`: the public scoring API (classify, listwise rerank, NLI rerank, entailment).

Every call goes the same way: strings -> cached token ids (`tokenization`) -> packed, length-sorted batches
(`packing`) -> the model (`modeling`) -> logits scattered back to their inputs -> results (`results`).

Bi-encoders (`modeling_biencoder`) take the same path with one more stage before the model: each label
(listwise: each passage) gets its vector from the label encoder, read from and written to a passage-vector
cache (`vector_cache`), so a passage seen before costs no encoder work at all.

A uni-encoder with a hybrid score (`hybrid`) adds the cosine of the embedding model it was made from to its
listwise logits; its passage embeddings go through the same cache machinery, keyed by that model.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .compiling import compile_encoder
from .config import GLiClassConfig
from .hybrid import HybridScorer, load_hybrid, save_hybrid
from .loading import load_config, load_label_tokenizer, load_model, load_tokenizer, save_pretrained
from .modeling import GLiClassUniEncoder
from .modeling_biencoder import GLiClassBiEncoder
from .packing import (
    MARKER_ONLY,
    Layout,
    PackedBatch,
    PackedSequence,
    PackingRules,
    collate,
    plan_batches,
    single_sequences,
)
from .results import RerankResult, rank
from .runtime import resolve_device, resolve_dtype
from .tokenization import DEFAULT_CACHE_BYTES as DEFAULT_TOKEN_CACHE_BYTES
from .tokenization import PieceTokenizer, check_unicode
from .vector_cache import LRUVectorStore, PassageVectorCache, VectorStore, fingerprint
from .vector_stores import open_store

logger = logging.getLogger(__name__)

Mode = Literal["listwise", "nli"]
MODES = ("listwise", "nli")

from .defaults import (  # noqa: E402,F401  (re-exported: the knobs' defaults live in one light module)
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_MAX_QUERY_TOKENS,
    DEFAULT_PASSAGES_PER_PASS,
    DEFAULT_TARGET_LENGTH,
    GPU_BATCH_SIZE,
    GPU_MAX_BATCH_TOKENS,
    check_compile,
)
from .defaults import positive_int as _positive_int  # noqa: E402

# Bi-encoders: the passage-vector cache's bound (~144,000 passages of a 384-wide label encoder: 1,860 bytes each).
DEFAULT_PASSAGE_CACHE_BYTES = 256 * 1024**2


class GLiClassReranker:
    """A GLiClass model used as a reranker, a zero-shot classifier and an NLI scorer.

    Build it with `GLiClassReranker.from_pretrained(name_or_path)`. One object may be shared by several
    threads: calls are serialised by an internal lock (Hugging Face fast tokenizers and the model are not
    safe to enter concurrently).

    Args:
        model: the loaded architecture.
        tokenizer: the checkpoint's tokenizer.
        device: where the model runs.
        dtype: the encoder's precision (the small heads always run in float32).
        passages_per_pass: most passages packed in one sequence in listwise mode. Fewer means less
            interaction between passages and shorter sequences; more means the query is read fewer times.
        target_length: listwise packing target: a passage joins a sequence only while the sequence stays
            within this many tokens (every sequence holds at least one passage). So ~30-token passages go
            ~9 to a sequence and ~200-token passages one per sequence, the fastest layouts measured on CPU.
            None packs up to `max_length`. NLI mode and `classify` read each text once with all its labels.
        max_length: hard cap on a packed sequence's tokens (default: min(512, the backbone's positions)).
        max_query_tokens: the query's budget (listwise: the text; NLI: the hypothesis; `classify`: each
            label). Longer ones are cut, with a warning logged once. None: 128, or what `max_length` leaves.
        max_passage_tokens: each passage's budget; None gives a passage whatever a sequence has room for.
            Cut passages are reported (`RerankResult.truncated`), never silently dropped.
        batch_size: most packed sequences per forward pass (None: 64 on CPU, 256 on CUDA).
        max_batch_tokens: most padded tokens per forward pass; keeps the work and the activation memory of a
            pass even across short and long sequences. "auto": 8,192 on CPU, 65,536 on CUDA; None: `batch_size`
            alone decides.
        show_progress_bar: a tqdm bar over batches, for long jobs.
        name_or_path: where the checkpoint came from (informational).
        token_cache_bytes: memory bound of the cache of token ids (default 256 MiB; 0 turns it off). A
            passage costs only the ids that can be scored (at most `max_length`), whatever its length.
        quantize: "int8" for dynamic int8 Linear layers (CPU, float32 only): 1.5x faster on CPU, ranks move a
            little (docs/benchmarks.md, section 3). None keeps full precision.
        compile: `torch.compile` the encoder(s) with dynamic shapes. True (torch.compile's default mode):
            1.15x on long passages on CPU, but tens of seconds of compilation on the first calls; `warm_up()`
            pays them up front. Or a torch.compile mode: "default" (same as True), "reduce-overhead" (CUDA
            graphs on a GPU; none on CPU), "max-autotune" (kernel autotuning, a longer compilation, and CUDA
            graphs on a GPU), "max-autotune-no-cudagraphs". With CUDA graphs the encoders' outputs
            are copied out of graph memory, and each new input shape (batch size, padded length) is recorded
            on its first calls (`compiling`). Compiled scores equal eager ones within 1e-4 in float32; in
            bf16/fp16 within the precision's own drift (compare with eager in the same dtype).
        label_tokenizer: a bi-encoder's label tokenizer (required for "bi-encoder" / "bi-encoder-fused").
        passage_cache_bytes: bi-encoders: the in-memory passage-vector cache's bound in bytes (vectors plus
            ~320 bytes per entry; least recently used dropped first; 0 disables it). Default 256 MiB.
        passage_store: bi-encoders: a `vector_cache.VectorStore` to keep passage vectors in instead (shared
            between rerankers, or another back-end), or a URI that `vector_stores.open_store` opens
            ("memory://?max_bytes=N", "sqlite:///path/to/file.db", "redis://host:6379/0");
            `passage_cache_bytes` is then unused. A persistent store holding another model's vectors is
            refused (`vector_stores.StoreModelMismatch`, naming that model).
        hybrid: a uni-encoder's hybrid score (`hybrid.HybridScorer`: the embedding model the reranker was
            made from, and weights): listwise logits become `logit_weight * logit + cosine_weight *
            cos(query, passage) + bias`, the cosine the embedding model's (mean pooling, L2 norm). Its passage
            embeddings use `passage_cache_bytes` / `passage_store` as a bi-encoder's passage vectors do.
            `from_pretrained` sets it from config.json's `hybrid` (turn off with `hybrid=False`). Listwise only:
            `mode="nli"` is refused while it is on; `classify` and `entailment` keep the model's own scores.

    Bi-encoder checkpoints ("bi-encoder", "bi-encoder-fused") score the same calls. Listwise, each passage is
    a label read by the label encoder alone (cut to that encoder's length or `max_passage_tokens`, reported
    as `truncated`), its vector cached by `fingerprint + text` (`passage_cache_stats`, `encode_passages`); the
    fused model reads the query with one marker token per passage, as many per sequence as `max_length`
    allows (`passages_per_pass` / `target_length` bound them only when given).
    """

    def __init__(
        self,
        model: GLiClassUniEncoder,
        tokenizer,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        passages_per_pass: int | None = None,
        target_length: int | None | Literal["auto"] = "auto",
        max_length: int | None = None,
        max_query_tokens: int | None = None,
        max_passage_tokens: int | None = None,
        batch_size: int | None = None,
        max_batch_tokens: int | Literal["auto"] | None = "auto",
        show_progress_bar: bool = False,
        quantize: str | None = None,
        compile: bool | str = False,
        name_or_path: str | None = None,
        token_cache_bytes: int = DEFAULT_TOKEN_CACHE_BYTES,
        label_tokenizer=None,
        passage_cache_bytes: int = DEFAULT_PASSAGE_CACHE_BYTES,
        passage_store: VectorStore | str | None = None,
        hybrid: HybridScorer | None = None,
    ) -> None:
        compile = check_compile(compile)  # refused before any work, naming the value
        self.config: GLiClassConfig = model.config
        fused = self.config.architecture_type == "bi-encoder-fused"
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        positions = self.config.max_position_embeddings or DEFAULT_MAX_LENGTH
        if max_length is None:
            max_length = min(DEFAULT_MAX_LENGTH, positions)
        self.max_length = _positive_int("max_length", max_length)
        if self.max_length > positions:
            raise ValueError(f"max_length={self.max_length} exceeds the backbone's {positions} positions")
        if passages_per_pass is None:
            # a fused model's passage costs one token: a sequence takes as many as max_length allows
            passages_per_pass = self.max_length if fused else DEFAULT_PASSAGES_PER_PASS
        self.passages_per_pass = _positive_int("passages_per_pass", passages_per_pass)
        if target_length == "auto":
            target_length = None if fused else DEFAULT_TARGET_LENGTH
        self.max_passage_tokens = None if max_passage_tokens is None else _positive_int(
            "max_passage_tokens", max_passage_tokens
        )
        batch_size, max_batch_tokens = batch_defaults(self.device, batch_size, max_batch_tokens)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.target_length = None if target_length is None else _positive_int("target_length", target_length)
        self.max_batch_tokens = None if max_batch_tokens is None else _positive_int(
            "max_batch_tokens", max_batch_tokens
        )
        self.show_progress_bar = show_progress_bar
        self.name_or_path = name_or_path
        self.tokenizer = tokenizer
        # A plain bi-encoder reads texts alone: its tokenizer needs no GLiClass markers.
        markers = self.config.architecture_type != "bi-encoder"
        self.pieces = PieceTokenizer(tokenizer, self.config, max_piece_tokens=self.max_length,
                                     cache_bytes=token_cache_bytes, markers=markers)
        self.layout = Layout.from_tokenizer(self.pieces)
        self.label_tokenizer = label_tokenizer
        self.label_pieces: PieceTokenizer | None = None
        self._passage_cache: PassageVectorCache | None = None
        if hybrid is not None and not isinstance(hybrid, HybridScorer):
            raise TypeError(f"hybrid must be a hybrid.HybridScorer or None, got {hybrid!r:.80}")
        if hybrid is not None and self.config.architecture_type != "uni-encoder":
            raise ValueError(f"hybrid: a hybrid score needs a uni-encoder; this checkpoint is "
                             f"{self.config.architecture_type!r}")
        self.hybrid = hybrid
        self.hybrid_pieces: PieceTokenizer | None = None
        if self.config.is_bi_encoder:
            self._init_label_side(label_tokenizer, passage_cache_bytes, passage_store)
        elif hybrid is not None:
            self._init_hybrid(hybrid, passage_cache_bytes, passage_store)
        # the query (or a hypothesis) plus one <<LABEL>> marker and one passage token must fit a sequence
        room = self.layout.query_room(self.max_length)
        if max_query_tokens is None:
            max_query_tokens = max(1, min(DEFAULT_MAX_QUERY_TOKENS, room))
        self.max_query_tokens = _positive_int("max_query_tokens", max_query_tokens)
        if self.max_query_tokens > room:
            raise ValueError(
                f"max_query_tokens={self.max_query_tokens} leaves no room for a passage in max_length="
                f"{self.max_length} (at most {room}): lower max_query_tokens or raise max_length"
            )
        if self.config.is_bi_encoder:
            # The stored weights, and what changes the vectors computed from them: budget, precision, device.
            self._passage_cache.fingerprint = fingerprint(
                [model.label_encoder], label_tokenizer, pooling=self.config.pooling_strategy,
                max_label_tokens=self.max_label_tokens, dtype=str(self.dtype), quantize=quantize,
                device_type=self.device.type,
            )
            bind_model = getattr(self._passage_cache.store, "bind_model", None)
            if bind_model is not None:  # a persistent store: refuse one that holds another model's vectors
                bind_model(self._passage_cache.fingerprint, name_or_path)
        elif hybrid is not None:
            # The embedding model's weights and what changes its vectors: token cap, precision, device.
            self._passage_cache.fingerprint = fingerprint(
                [hybrid.encoder.model], hybrid.encoder.tokenizer, pooling="mean-l2",
                max_tokens=hybrid.encoder.max_tokens, dtype=str(self.dtype), device_type=self.device.type,
            )
            bind_model = getattr(self._passage_cache.store, "bind_model", None)
            if bind_model is not None:
                bind_model(self._passage_cache.fingerprint, f"{name_or_path} (hybrid: {hybrid.encoder.source})")
        elif passage_store is not None:
            logger.warning("passage_store is ignored: a %s checkpoint reads passages with the query",
                           self.config.architecture_type)
        self.quantize = quantize
        self.model = self._prepare(model, quantize, compile)
        if hybrid is not None:
            hybrid.encoder.to(self.device).to(self.dtype).eval()
        self._lock = threading.Lock()
        self._warned_query_cut = False

    def _init_label_side(self, label_tokenizer, cache_bytes: int, store: VectorStore | None) -> None:
        """The label tokenizer, its token budget and the passage-vector cache of a bi-encoder."""
        if label_tokenizer is None:
            raise ValueError(f"a {self.config.architecture_type} checkpoint needs its label_tokenizer")
        positions = self.config.label_max_position_embeddings or DEFAULT_MAX_LENGTH
        self.label_pieces = PieceTokenizer(label_tokenizer, self.config, max_piece_tokens=positions, markers=False)
        specials = len(self.label_pieces.prefix_ids) + len(self.label_pieces.suffix_ids)
        budget = min(positions, DEFAULT_MAX_LENGTH) - specials
        if self.max_passage_tokens is not None:
            budget = min(budget, self.max_passage_tokens)
        self.max_label_tokens = budget
        self._passage_cache = _open_passage_cache(cache_bytes, store)

    def _init_hybrid(self, hybrid: HybridScorer, cache_bytes: int, store: VectorStore | str | None) -> None:
        """The embedding model's tokenizer and its passage-vector cache (fingerprint set once the dtype is known)."""
        encoder = hybrid.encoder
        self.hybrid_pieces = PieceTokenizer(encoder.tokenizer, self.config, max_piece_tokens=encoder.max_tokens,
                                            markers=False)
        specials = len(self.hybrid_pieces.prefix_ids) + len(self.hybrid_pieces.suffix_ids)
        self.hybrid_tokens = encoder.max_tokens - specials  # sentence-transformers' cap counts the specials
        self._passage_cache = _open_passage_cache(cache_bytes, store)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        *,
        token: str | None = None,
        revision: str | None = None,
        attn_implementation: str | None = "sdpa",
        hybrid: bool | HybridScorer = True,
        **options: Any,
    ) -> GLiClassReranker:
        """Load a GLiClass checkpoint from a local folder or a Hugging Face Hub id.

        `options` are the constructor's knobs (`passages_per_pass`, `max_length`, `batch_size`, ...). A model
        trained by `gliclass-rerank train` carries the layout it was trained with (config.json's `packing`):
        each of its keys that `options` does not set applies, so it scores as it was trained by default.
        `attn_implementation` is passed to transformers ("sdpa" by default, "flash_attention_2" on GPU
        when flash-attn is installed; backbones without SDPA, like DeBERTa, keep their own attention).
        `hybrid`: True applies the checkpoint's hybrid score (config.json's `hybrid`, its embedding model read
        from the checkpoint's subfolder) when it has one; False scores with the model alone; a
        `hybrid.HybridScorer` is used instead of the checkpoint's. `compile` (False, True or a torch.compile
        mode such as "reduce-overhead"; see the class) is checked before anything loads.
        """
        if "compile" in options:
            check_compile(options["compile"])
        config = load_config(name_or_path, token=token, revision=revision)
        model = load_model(
            name_or_path, config=config, attn_implementation=attn_implementation, token=token, revision=revision
        )
        tokenizer = load_tokenizer(name_or_path, token=token, revision=revision)
        if config.is_bi_encoder:
            options.setdefault(
                "label_tokenizer", load_label_tokenizer(name_or_path, config, token=token, revision=revision)
            )
        if hybrid is True:
            hybrid = load_hybrid(name_or_path, config.hybrid, token=token, revision=revision) if config.hybrid else None
        elif hybrid is False:
            hybrid = None
        stored = {key: value for key, value in config.packing.items() if key not in options}
        try:
            return cls(model, tokenizer, device=device, dtype=dtype, name_or_path=str(name_or_path),
                       hybrid=hybrid, **stored, **options)
        except ValueError as error:
            if not stored:
                raise
            raise ValueError(f"{error} (the checkpoint's config.json sets packing {stored}; pass your own "
                             "values to override them)") from None

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write the checkpoint in upstream's GLiClass format (a bi-encoder's label tokenizer included; a hybrid
        score's weights in config.json and its embedding model in `hybrid_encoder/`). A compiled reranker saves
        its eager weights; an int8-quantized one is refused (the format holds float weights: save the checkpoint
        it was loaded from)."""
        if self.quantize is not None:
            raise ValueError(f"save_pretrained: this reranker was loaded with quantize={self.quantize!r}, and a "
                             f"GLiClass checkpoint holds float weights; save the checkpoint it was loaded from "
                             f"({self.name_or_path!r}) instead")
        save_pretrained(self.model, self.tokenizer, folder, label_tokenizer=self.label_tokenizer)
        if self.hybrid is not None:
            save_hybrid(folder, self.hybrid)

    def _prepare(self, model: GLiClassUniEncoder | GLiClassBiEncoder, quantize: str | None, compile: bool | str):
        model = model.to(self.device).eval()
        encoder_names = [n for n in ("encoder_model", "label_encoder") if hasattr(model, n)]
        for name in encoder_names:
            getattr(model, name).to(self.dtype)
        for head in model.heads():
            head.float()
        model.logit_scale.data = model.logit_scale.data.float()
        if quantize is not None:
            if quantize != "int8":
                raise ValueError(f"quantize={quantize!r}: only 'int8' (dynamic, CPU) is available")
            if self.device.type != "cpu" or self.dtype != torch.float32:
                raise ValueError("quantize='int8' needs device='cpu' and dtype float32")
            with warnings.catch_warnings():
                # Deprecated in favour of torchao, yet still the one dynamic int8 path in stock torch.
                warnings.simplefilter("ignore")
                for name in encoder_names:
                    quantized = torch.ao.quantization.quantize_dynamic(
                        getattr(model, name), {torch.nn.Linear}, dtype=torch.qint8
                    )
                    setattr(model, name, quantized)
        if compile is not False:
            for name in encoder_names:
                setattr(model, name, compile_encoder(getattr(model, name), compile))
        return model

    def __repr__(self) -> str:
        return (
            f"GLiClassReranker({self.name_or_path!r}, device={str(self.device)!r}, dtype={self.dtype}, "
            f"passages_per_pass={self.passages_per_pass}, max_length={self.max_length})"
        )

    # ------------------------------------------------------------------ public API
    def warm_up(self) -> None:
        """Pay one-time costs before the first real call: with `compile`, torch.compile's compilation
        (tens of seconds on CPU; a single sequence and a batch of several are separate graphs), otherwise
        first allocations and lazy initialisation. Servers call it at start-up. CUDA graphs (`compile=
        "reduce-overhead"` on a GPU) are recorded per input shape and thread: other shapes are recorded on
        their own first calls."""
        words = " ".join(["warm"] * 400)
        self.rerank("warm up", ["warm up"])  # one short sequence
        self.rerank("warm up", [words, words, "warm up " * 20, "warm up"])  # a batch of several lengths
        self.entailment([words, "warm up"], ["warm up", "up"])
        with self._lock:  # another thread may be tokenising
            self.pieces.clear_cache()  # the filler is not worth keeping

    def rerank(
        self,
        query: str,
        passages: Sequence[str],
        top_n: int | None = None,
        threshold: float | None = None,
        mode: Mode = "listwise",
    ) -> list[RerankResult]:
        """Passages sorted by relevance to `query`, highest first (ties keep input order).

        Args:
            query: the question or search query.
            passages: the retrieved passages; an empty list gives [].
            top_n: keep at most this many results.
            threshold: keep results scoring at least this (in [0, 1]).
            mode: "listwise" reads the query once with up to `passages_per_pass` passages as its labels;
                "nli" reads each passage as a premise with the query as its hypothesis.
        """
        return self.rerank_batch([query], [passages], top_n=top_n, threshold=threshold, mode=mode)[0]

    def rerank_batch(
        self,
        queries: Sequence[str],
        passages_per_query: Sequence[Sequence[str]],
        top_n: int | None = None,
        threshold: float | None = None,
        mode: Mode = "listwise",
    ) -> list[list[RerankResult]]:
        """`rerank` for many queries at once; their sequences share forward passes."""
        _check_top_n(top_n)
        _check_threshold(threshold)
        logits, truncated = self._score_queries(queries, passages_per_query, mode)
        return [
            rank(_sigmoid(x), list(p), t, top_n=top_n, threshold=threshold, logits=x)
            for x, p, t in zip(logits, passages_per_query, truncated)
        ]

    def score(self, query: str, passages: Sequence[str], mode: Mode = "listwise", raw: bool = False) -> list[float]:
        """Relevance of each passage to `query`, in input order: probabilities, or logits with `raw=True`."""
        logits, _ = self._score_queries([query], [passages], mode)
        return (logits[0] if raw else _sigmoid(logits[0])).tolist()

    def classify(
        self,
        texts: str | Sequence[str],
        labels: Sequence[str],
        multi_label: bool = True,
        threshold: float | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Zero-shot classification: per text, `[{"label", "score"}]` sorted by score.

        Multi-label scores are independent sigmoids; single-label scores are a softmax over all labels
        (labels that do not fit one sequence are scored in further sequences and still share the softmax).
        `threshold` drops labels scoring below it.
        """
        _check_threshold(threshold)
        if isinstance(texts, str):
            texts = [texts]
        _check_strings("texts", texts)
        _check_strings("labels", labels)
        if not labels:
            raise ValueError("labels is empty: give at least one candidate label")
        logits, _, _ = self._score_texts(texts, [labels] * len(texts))
        out = []
        for row in logits:
            probs = _softmax(row) if not multi_label else _sigmoid(row)
            ranked = rank(probs, list(labels), [False] * len(labels), threshold=threshold)
            out.append([{"label": r.text, "score": r.score} for r in ranked])
        return out

    def entailment(
        self, premises: Sequence[str], hypotheses: Sequence[str] | Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """How strongly each premise supports each hypothesis (claim), in [0, 1].

        `hypotheses` is either one list checked against every premise, or one list per premise. Each
        premise is read once for all its hypotheses (they are its labels). Returns `scores[i][j]` for
        premise i and its hypothesis j.
        """
        _check_strings("premises", premises)
        if isinstance(hypotheses, str) or not isinstance(hypotheses, Sequence):
            # a bare string is a Sequence too, and would be read as one claim per character
            raise TypeError(f"hypotheses must be a list of strings (or one list per premise), "
                            f"got {type(hypotheses).__name__}: {hypotheses!r:.80}")
        if hypotheses and all(isinstance(h, str) for h in hypotheses):
            per_premise = [list(hypotheses)] * len(premises)
        else:
            if len(hypotheses) != len(premises):
                raise ValueError(
                    f"hypotheses: got {len(hypotheses)} lists for {len(premises)} premises "
                    "(give one list per premise, or one flat list for all)"
                )
            for i, claims in enumerate(hypotheses):
                _check_strings(f"hypotheses[{i}]", claims)
            per_premise = [list(h) for h in hypotheses]
        logits, _, _ = self._score_texts(premises, per_premise)
        return [_sigmoid(row).tolist() for row in logits]

    # ------------------------------------------------------------------ scoring core
    def _score_queries(
        self, queries: Sequence[str], passages_per_query: Sequence[Sequence[str]], mode: str
    ) -> tuple[list[np.ndarray], list[list[bool]]]:
        if self.hybrid is None:
            return self._model_scores(queries, passages_per_query, mode)
        if mode == "nli":
            raise ValueError("mode='nli' is not available with a hybrid score (it is fitted for listwise logits): "
                             "use mode='listwise', or load the model with hybrid=False")
        features, cuts = self._hybrid_features(queries, passages_per_query)
        return [self.hybrid.combine(f[:, 0], f[:, 1]) for f in features], cuts

    def hybrid_features(self, queries: Sequence[str], passages_per_query: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Per query, [n passages, 2] float32: the model's own listwise logit and the hybrid embedding model's
        cosine of each passage (what `hybrid.fit_hybrid` fits the weights on). Needs a hybrid scorer."""
        if self.hybrid is None:
            raise ValueError("hybrid_features needs a reranker with a hybrid scorer (hybrid=HybridScorer(...))")
        return self._hybrid_features(queries, passages_per_query)[0]

    def _hybrid_features(
        self, queries: Sequence[str], passages_per_query: Sequence[Sequence[str]]
    ) -> tuple[list[np.ndarray], list[list[bool]]]:
        logits, cuts = self._model_scores(queries, passages_per_query, "listwise")
        with self._lock:
            cosines, cosine_cuts = self._hybrid_cosines(queries, passages_per_query)
        features = [np.stack([x, c], axis=1).astype(np.float32) for x, c in zip(logits, cosines)]
        # a passage cut by either reader is reported as cut
        cuts = [[a or b for a, b in zip(x, y)] for x, y in zip(cuts, cosine_cuts)]
        return features, cuts

    def _hybrid_cosines(
        self, queries: Sequence[str], passages_per_query: Sequence[Sequence[str]]
    ) -> tuple[list[np.ndarray], list[list[bool]]]:
        """The embedding model's cosine of each (query, passage) and the passages' cut flags (caller holds the
        lock). Passage vectors go through the passage-vector cache; queries are embedded each call."""
        encoder, pieces = self.hybrid.encoder, self.hybrid_pieces
        unique = list(dict.fromkeys(p for passages in passages_per_query for p in passages))
        if not unique:
            return [np.zeros(0, dtype=np.float32) for _ in queries], [[] for _ in queries]
        passage_vectors, cut_of = self._cached_vectors(unique, pieces, self.hybrid_tokens, encoder.embed,
                                                       encoder.width)
        sequences, _ = single_sequences(pieces.plain(list(queries)), pieces.prefix_ids, pieces.suffix_ids,
                                        self.hybrid_tokens)
        query_vectors = self._encode_sequences(sequences, encoder.embed, pieces.pad_id)
        position = {p: i for i, p in enumerate(unique)}
        cosines, cuts = [], []
        with torch.inference_mode():
            for query_vector, passages in zip(query_vectors, passages_per_query):
                rows = torch.tensor([position[p] for p in passages], dtype=torch.long, device=self.device)
                cosines.append((passage_vectors[rows] @ query_vector).cpu().numpy().astype(np.float32))
                cuts.append([cut_of[position[p]] for p in passages])
        return cosines, cuts

    def _model_scores(
        self, queries: Sequence[str], passages_per_query: Sequence[Sequence[str]], mode: str
    ) -> tuple[list[np.ndarray], list[list[bool]]]:
        """The model's own logits per query and passage, and the passages' cut flags."""
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: choose 'listwise' or 'nli'")
        if isinstance(queries, str):
            raise TypeError("queries must be a list of strings, not one string")
        if len(queries) != len(passages_per_query):
            raise ValueError(
                f"got {len(queries)} queries but {len(passages_per_query)} passage lists: give one list per query"
            )
        for q in queries:
            _check_query(q)
        for passages in passages_per_query:
            _check_passages(passages)

        if mode == "listwise" and self.config.is_bi_encoder:
            with self._lock:
                logits, label_cuts, _ = self._score_bi(queries, passages_per_query, listwise=True)
            return logits, label_cuts

        if mode == "listwise":
            with self._lock:
                query_pieces = self.pieces.texts(list(queries))
                self._warn_query_cut(max(len(p.ids) for p in query_pieces) if query_pieces else 0)
                rules, sequences, label_cuts = self.packing_rules, [], []
                for task, (query, passages) in enumerate(zip(query_pieces, passages_per_query)):
                    packed, cuts = rules.query_with_passages(task, query, self.pieces.labels(list(passages)))
                    sequences.extend(packed)
                    label_cuts.append(cuts)
                logits = self._run(sequences, [len(c) for c in label_cuts])
            return logits, label_cuts

        # NLI: every passage is a premise with the query as its only hypothesis.
        flat = [p for passages in passages_per_query for p in passages]
        hyps = [[q] for q, passages in zip(queries, passages_per_query) for _ in passages]
        logits, _, text_cuts = self._score_texts(flat, hyps)
        scores, cuts, start = [], [], 0
        for passages in passages_per_query:
            end = start + len(passages)
            scores.append(np.array([row[0] for row in logits[start:end]], dtype=np.float32).reshape(-1))
            cuts.append(text_cuts[start:end])
            start = end
        return scores, cuts

    def _score_texts(
        self, texts: Sequence[str], labels_per_text: Sequence[Sequence[str]]
    ) -> tuple[list[np.ndarray], list[list[bool]], list[bool]]:
        """Logits for texts each read with all its labels (classify, NLI, entailment)."""
        if self.config.is_bi_encoder:
            with self._lock:
                return self._score_bi(texts, labels_per_text, listwise=False)
        with self._lock:
            rules, sequences, label_cuts, text_cuts = self.packing_rules, [], [], []
            for task, (text, labels) in enumerate(zip(self.pieces.texts(list(texts)), labels_per_text)):
                label_pieces = self.pieces.labels(list(labels))
                self._warn_query_cut(max((len(p.ids) for p in label_pieces), default=0))
                packed, cuts, text_cut = rules.text_with_labels(task, text, label_pieces)
                sequences.extend(packed)
                label_cuts.append(cuts)
                text_cuts.append(text_cut)
            logits = self._run(sequences, [len(c) for c in label_cuts])
        return logits, label_cuts, text_cuts

    # ------------------------------------------------------------------ bi-encoders
    def _score_bi(
        self, texts: Sequence[str], labels_per_text: Sequence[Sequence[str]], listwise: bool
    ) -> tuple[list[np.ndarray], list[list[bool]], list[bool]]:
        """Bi-encoder logits per text and label, label cut flags, text cut flags (caller holds the lock).

        Listwise, the text is a query (cut to `max_query_tokens`) and the labels are passages; otherwise the
        text is a premise or a text to classify (cut to what a sequence holds) and the labels are claims or
        class names. Labels are cut by the label encoder's budget only.
        """
        model, fused = self.model, self.model.fused
        pieces = self.pieces.texts(list(texts)) if fused else self.pieces.plain(list(texts))
        if listwise:
            self._warn_query_cut(max((len(p.ids) for p in pieces), default=0))
        unique = list(dict.fromkeys(label for labels in labels_per_text for label in labels))
        embedded, cut_of = self._label_vectors(unique)
        position = {label: i for i, label in enumerate(unique)}
        label_index = [np.array([position[x] for x in labels], dtype=np.int64) for labels in labels_per_text]
        label_cuts = [[cut_of[i] for i in index] for index in label_index]
        counts = [len(index) for index in label_index]
        # flat pair p = (task_of_pair[p], row_of_pair[p]): every (text, label) pair, task by task
        task_of_pair = np.repeat(np.arange(len(texts)), counts)
        row_of_pair = np.concatenate(label_index) if label_index else np.zeros(0, dtype=np.int64)
        if not unique:
            return [np.zeros(0, dtype=np.float32) for _ in texts], label_cuts, [False] * len(texts)
        with torch.inference_mode():
            projected = model.project_labels(embedded)  # [U, D] in the text side's space

        if fused:
            rules, sequences, text_cuts = self.packing_rules, [], []
            for task, (text, n) in enumerate(zip(pieces, counts)):
                if listwise:
                    packed, _ = rules.query_with_passages(task, text, [MARKER_ONLY] * n)
                    text_cuts.append(len(text.ids) > self.max_query_tokens)
                else:
                    packed, _, text_cut = rules.text_with_labels(task, text, [MARKER_ONLY] * n)
                    text_cuts.append(text_cut)
                sequences.extend(packed)
            task_offset = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)

            def inject(batch: PackedBatch) -> torch.Tensor:
                rows = row_of_pair[task_offset[batch.task_of_label] + batch.index_of_label]
                slots = torch.zeros(*batch.label_mask.shape, projected.shape[-1], device=self.device)
                slots[batch.label_mask.to(self.device)] = projected[torch.from_numpy(rows).to(self.device)]
                return slots

            logits = self._run(sequences, counts, inject)
            if self.config.label_cosine_weight:
                # our extension (config.label_cosine_weight): the texts read by the label encoder as well
                label_side = self.label_pieces.plain(list(texts))
                seqs, _ = single_sequences(label_side, self.label_pieces.prefix_ids, self.label_pieces.suffix_ids,
                                           self.max_label_tokens)
                embedded_texts = self._encode_sequences(seqs, model.embed_labels, self.label_pieces.pad_id)
                with torch.inference_mode():
                    extra = model.label_cosine(embedded_texts[torch.from_numpy(task_of_pair).to(self.device)],
                                               embedded[torch.from_numpy(row_of_pair).to(self.device)])
                extra = np.split(extra.cpu().numpy(), np.cumsum(counts)[:-1])
                logits = [x + e.astype(np.float32) for x, e in zip(logits, extra)]
            return logits, label_cuts, text_cuts

        specials = len(self.pieces.prefix_ids) + len(self.pieces.suffix_ids)
        budget = self.max_query_tokens if listwise else self.max_length - specials
        if not listwise and self.max_passage_tokens is not None:
            budget = min(budget, self.max_passage_tokens)
        sequences, text_cuts = single_sequences(pieces, self.pieces.prefix_ids, self.pieces.suffix_ids, budget)
        text_vectors = self._encode_sequences(sequences, model.encode_texts, self.layout.pad_id)
        with torch.inference_mode():
            pair_texts = text_vectors[torch.from_numpy(task_of_pair).to(self.device)]
            pair_labels = projected[torch.from_numpy(row_of_pair).to(self.device)][:, None]
            mask = torch.ones(len(task_of_pair), 1, dtype=torch.bool, device=self.device)
            flat = model.score(pair_texts, pair_labels, mask)[:, 0].float().cpu().numpy()
        return np.split(flat, np.cumsum(counts)[:-1]), label_cuts, text_cuts

    def _label_vectors(self, labels: list[str]) -> tuple[torch.Tensor, list[bool]]:
        """The label encoder's pooled vectors [N, width] (on the device) and cut flags, through the cache."""
        width = self.config.label_model_config.get_text_config().hidden_size
        return self._cached_vectors(labels, self.label_pieces, self.max_label_tokens, self.model.embed_labels, width)

    def _cached_vectors(
        self, texts: list[str], pieces: PieceTokenizer, max_tokens: int, encode, width: int
    ) -> tuple[torch.Tensor, list[bool]]:
        """`encode`'s vectors [N, width] (on the device) of texts read alone (each cut to `max_tokens`) and their
        cut flags, read from the passage-vector cache where stored, computed and stored otherwise."""
        cache = self._passage_cache
        found = cache.get_many(texts)
        missing = [i for i, hit in enumerate(found) if hit is None]
        if missing:
            todo = [texts[i] for i in missing]
            sequences, cuts = single_sequences(pieces.plain(todo), pieces.prefix_ids, pieces.suffix_ids, max_tokens)
            computed = self._encode_sequences(sequences, encode, pieces.pad_id).cpu().numpy()
            cache.put_many(todo, computed, cuts)
            for i, vector, cut in zip(missing, computed, cuts):
                found[i] = (vector, cut)
        matrix = np.stack([v for v, _ in found]) if found else np.zeros((0, width), dtype=np.float32)
        return torch.from_numpy(matrix).to(self.device), [c for _, c in found]

    def _encode_sequences(self, sequences: list[PackedSequence], encode, pad_id: int) -> torch.Tensor:
        """`encode(batch)` for single sequences, batched by length; rows back in sequence order [N, D]."""
        plan = plan_batches(sequences, self.batch_size, self.max_batch_tokens)
        out: torch.Tensor | None = None
        with torch.inference_mode():
            for indices in plan:
                batch = collate([sequences[i] for i in indices], pad_id)
                vectors = encode(batch.to(self.device)).float()
                if out is None:
                    out = torch.empty(len(sequences), vectors.shape[-1], device=self.device)
                out[torch.tensor(indices, device=self.device)] = vectors
        return out

    def encode_passages(self, passages: Sequence[str]) -> np.ndarray:
        """Bi-encoders: compute (or read from the cache) and cache the vectors of `passages`, e.g. a corpus
        ahead of time so that reranking it later costs no label-encoder work.

        Returns the label encoder's pooled vectors, float32 [N, label encoder width], in input order: what
        the cache keeps (the projectors apply at scoring time, so these stay valid while only the heads or
        the text encoder change). Passages cut to the label encoder's budget are cut here as when scored.
        A uni-encoder with a hybrid score: its embedding model's unit vectors (what its cache keeps).
        """
        if not self.config.is_bi_encoder and self.hybrid is None:
            raise TypeError(
                f"encode_passages needs a bi-encoder checkpoint or a hybrid score; this one is "
                f"{self.config.architecture_type!r} (its passages are read together with the query)"
            )
        _check_passages(passages)
        with self._lock:
            if self.hybrid is not None:
                vectors, _ = self._cached_vectors(list(passages), self.hybrid_pieces, self.hybrid_tokens,
                                                  self.hybrid.encoder.embed, self.hybrid.encoder.width)
            else:
                vectors, _ = self._label_vectors(list(passages))
        return vectors.cpu().numpy()

    def passage_cache_stats(self) -> dict[str, int | None]:
        """Bi-encoders (and a hybrid score's embedding model): the passage-vector cache's hits and misses
        (passages looked up), and for the in-memory store its entries, bytes and bound. Uni-encoders without
        a hybrid score: all None (they have no such cache)."""
        if self._passage_cache is None:
            return {"hits": None, "misses": None, "entries": None, "bytes": None, "max_bytes": None}
        # No reranker lock: the counters are plain ints and the store locks itself, and the server's /metrics
        # reads this on its event loop, which must not wait for a running batch.
        return self._passage_cache.stats()

    def _warn_query_cut(self, longest: int) -> None:
        if longest > self.max_query_tokens and not self._warned_query_cut:
            self._warned_query_cut = True  # once per reranker: a server would otherwise log it per request
            logger.warning(
                "a query (or hypothesis / label) of %d tokens was cut to max_query_tokens=%d; raise "
                "max_query_tokens to score more of it (warned once)", longest, self.max_query_tokens,
            )

    @property
    def packing_rules(self) -> PackingRules:
        """The rules that lay out this reranker's calls (the trainer packs with the same ones)."""
        return PackingRules(self.layout, self.max_length, self.max_query_tokens, self.max_passage_tokens,
                            self.passages_per_pass, self.target_length)

    def _run(self, sequences: list[PackedSequence], labels_per_task: list[int], inject=None) -> list[np.ndarray]:
        """Run packed sequences through the model batch by batch; logits scattered back to each task's labels.

        `inject(batch)` gives a fused bi-encoder's label vectors for the batch's label slots [B, K, D]."""
        logits = [np.zeros(n, dtype=np.float32) for n in labels_per_task]
        if not sequences:
            return logits
        plan = plan_batches(sequences, self.batch_size, self.max_batch_tokens)
        batches: Iterable = (collate([sequences[i] for i in indices], self.layout.pad_id) for indices in plan)
        if self.show_progress_bar:
            batches = tqdm(batches, total=len(plan), desc="scoring", unit="batch")
        with torch.inference_mode():
            for batch in batches:
                moved = batch.to(self.device)
                batch_logits = self.model(moved) if inject is None else self.model(moved, inject(batch))
                values = batch_logits[batch.label_mask.to(self.device)].float().cpu().numpy()
                for task, index, value in zip(batch.task_of_label, batch.index_of_label, values):
                    logits[task][index] = value
        return logits


# ---------------------------------------------------------------------- helpers
def _open_passage_cache(cache_bytes: int, store: VectorStore | str | None) -> PassageVectorCache:
    """A passage-vector cache (fingerprint set by the caller) over `store`: an in-memory LRU of `cache_bytes`
    when None, a URI opened by `vector_stores.open_store`, or a `VectorStore`."""
    if store is None:
        store = LRUVectorStore(cache_bytes)
    elif isinstance(store, str):
        store = open_store(store)  # a URI: memory://, sqlite:///file.db, redis://host:port/db
    elif not isinstance(store, VectorStore):
        raise TypeError(f"passage_store must have get_many/put_many (vector_cache.VectorStore), got {store!r:.80}")
    return PassageVectorCache(store, fingerprint="")


def reuse_loaded(model: Any, **loading_options: Any) -> GLiClassReranker | None:
    """`model` when it is an already loaded reranker (to share it), else None (a hub id or folder to load).

    Framework adapters take either; loading options (device, dtype, ...) cannot change a loaded model, so
    any that are set alongside one are refused by name rather than silently ignored.
    """
    if not isinstance(model, GLiClassReranker):
        return None
    fixed = [name for name, value in loading_options.items() if value]
    if fixed:
        raise ValueError(
            f"{', '.join(fixed)} configure loading a model; a loaded GLiClassReranker keeps its own settings "
            "(pass them to GLiClassReranker.from_pretrained instead)"
        )
    return model


# Probabilities stay in float64: in float32 every logit above ~16.6 rounds to 1.0, and models with large
# logits (a cosine times a logit scale of 20) would tie at the top of the ranking. Ranking uses the logits.
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max())
    return e / e.sum()


def batch_defaults(
    device: torch.device, batch_size: int | None, max_batch_tokens: int | str | None
) -> tuple[int, int | None]:
    """(batch_size, max_batch_tokens) with the unset ones filled in for the device (CPU-sized or GPU-sized)."""
    on_gpu = device.type == "cuda"
    if batch_size is None:
        batch_size = GPU_BATCH_SIZE if on_gpu else DEFAULT_BATCH_SIZE
    if max_batch_tokens == "auto":
        max_batch_tokens = GPU_MAX_BATCH_TOKENS if on_gpu else DEFAULT_MAX_BATCH_TOKENS
    return batch_size, max_batch_tokens


def _check_top_n(top_n: Any) -> None:
    if top_n is not None:
        _positive_int("top_n", top_n)


def _check_threshold(threshold: Any) -> None:
    if threshold is None:
        return
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold!r}: must be a number in [0, 1]")


def _check_query(query: Any) -> None:
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, got {type(query).__name__}: {query!r:.80}")
    check_unicode("query", query)
    if not query.strip():
        raise ValueError(f"query is empty ({query!r}): give the text to rank the passages against")


def _check_passages(passages: Any) -> None:
    if isinstance(passages, str) or not isinstance(passages, Sequence):
        raise TypeError(f"passages must be a list of strings, got {type(passages).__name__}")
    _check_strings("passages", passages)


def _check_strings(name: str, values: Any) -> None:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(values).__name__}")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(value).__name__}: {value!r:.80}")
        check_unicode(f"{name}[{i}]", value)
