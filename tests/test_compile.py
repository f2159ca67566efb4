"""`compile=`: torch.compile modes, the CUDA-graph-safe wrapper, the command line and the GPU benchmark's names.

Compiling on CPU takes seconds to tens of seconds, so only two compiled rerankers are built here (module-scoped):
a uni-encoder and a bi-encoder, both with mode "reduce-overhead" (on CPU: compiled, no CUDA graphs, but through
the same `CudaGraphSafe` wrapper a GPU uses).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from gliclass_rerank import GLiClassReranker, cli
from gliclass_rerank.compiling import CudaGraphSafe, clone_tensors, compile_encoder
from gliclass_rerank.defaults import COMPILE_MODES
from gliclass_rerank.testing import tiny_checkpoint

QUERY = "which team won the football match"
PASSAGES = [
    "The football team won the championship after a penalty shootout.",
    "She baked a chocolate cake with fresh strawberries.",
    "The central bank raised interest rates after a long meeting of its board.",
    "The hockey team lost the match on ice.",
    "Heavy rain is expected this weekend.",
]
TOL = 1e-5


# ---------------------------------------------------------------------------- refused values (no compilation)
@pytest.mark.parametrize("value", ["fast", "reduce_overhead", 1, None])
def test_a_bad_compile_value_is_refused_naming_it_before_anything_compiles(value, reranker, tiny_model_dir,
                                                                          monkeypatch):
    def no_compile(*args, **kwargs):
        raise AssertionError("torch.compile ran before the value was checked")

    monkeypatch.setattr(torch, "compile", no_compile)
    with pytest.raises(ValueError, match=rf"compile={value!r}.*'reduce-overhead'"):
        GLiClassReranker(reranker.model, reranker.tokenizer, device="cpu", compile=value)
    with pytest.raises(ValueError, match=rf"compile={value!r}"):
        GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", compile=value)


@pytest.mark.parametrize(
    ("value", "mode", "wrapped"),
    [(True, None, False), ("default", "default", False), ("reduce-overhead", "reduce-overhead", True),
     ("max-autotune", "max-autotune", True), ("max-autotune-no-cudagraphs", "max-autotune-no-cudagraphs", False)],
)
def test_compile_encoder_passes_the_mode_and_wraps_the_cudagraph_modes(value, mode, wrapped, monkeypatch):
    seen = {}

    def fake_compile(module, **kwargs):
        seen.update(kwargs)
        return nn.Identity()

    monkeypatch.setattr(torch, "compile", fake_compile)
    encoder = nn.Linear(2, 2)
    compiled = compile_encoder(encoder, value)
    assert seen == {"mode": mode, "dynamic": True}
    assert isinstance(compiled, CudaGraphSafe) is wrapped
    assert compile_encoder(encoder, False) is encoder


# ---------------------------------------------------------------------------- the wrapper
class _Backbone(nn.Module):
    """Returns tensors it keeps (as CUDA-graph memory would be reused), and offers an embedding table."""

    def __init__(self, output: str) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(5, 3)
        self.output = output
        self.kept = torch.arange(6.0).reshape(1, 2, 3)
        self.layers = (torch.ones(1, 2, 3), torch.zeros(1, 2, 3))

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings

    def forward(self, input_ids):
        if self.output == "tensor":
            return self.kept
        if self.output == "tuple":
            return (self.kept, self.layers)
        return BaseModelOutput(last_hidden_state=self.kept, hidden_states=self.layers)


def _shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def test_cudagraph_safe_returns_clones_and_marks_a_step(monkeypatch):
    steps = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: steps.append(1))
    inner = _Backbone("tensor")
    out = CudaGraphSafe(inner)(torch.zeros(1, 2, dtype=torch.long))
    assert torch.equal(out, inner.kept) and not _shares_storage(out, inner.kept)
    assert steps == [1]


def test_cudagraph_safe_clones_model_outputs_and_reads_the_wrapped_modules_attributes():
    inner = _Backbone("model_output")
    wrapper = CudaGraphSafe(inner)
    out = wrapper(torch.zeros(1, 2, dtype=torch.long))
    assert isinstance(out, BaseModelOutput)
    assert torch.equal(out.last_hidden_state, inner.kept) and not _shares_storage(out[0], inner.kept)
    for mine, kept in zip(out.hidden_states, inner.layers):
        assert torch.equal(mine, kept) and not _shares_storage(mine, kept)
    assert wrapper.get_input_embeddings() is inner.embeddings  # modeling.py reads it on the encoder
    assert wrapper.module is inner

    inner = _Backbone("tuple")
    nested = CudaGraphSafe(inner)(None)
    assert isinstance(nested, tuple) and isinstance(nested[1], tuple)
    assert not _shares_storage(nested[0], inner.kept)
    assert not any(_shares_storage(mine, kept) for mine, kept in zip(nested[1], inner.layers))
    assert clone_tensors({"n": 3, "x": None}) == {"n": 3, "x": None}


# ---------------------------------------------------------------------------- compiled rerankers (CPU)
@pytest.fixture(scope="module")
def uni_pair(tiny_model_dir):
    """Eager and compile="reduce-overhead" rerankers of the tiny checkpoint, 2 passages per sequence (so a batch
    holds sequences of different lengths, padded)."""
    eager = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", dtype="float32", passages_per_pass=2)
    compiled = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", dtype="float32", passages_per_pass=2,
                                                compile="reduce-overhead")
    return eager, compiled


def test_reduce_overhead_listwise_scores_equal_eager(uni_pair):
    eager, compiled = uni_pair
    assert isinstance(compiled.model.encoder_model, CudaGraphSafe)
    expected = eager.score(QUERY, PASSAGES)
    assert compiled.score(QUERY, PASSAGES) == pytest.approx(expected, abs=TOL)
    assert compiled.score(QUERY, PASSAGES) == pytest.approx(expected, abs=TOL)  # compiled code reused


@pytest.fixture(scope="module")
def bi_encoder_dir(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny_bi"), architecture="bi-encoder", seed=1)


def test_reduce_overhead_bi_encoder_scores_equal_eager_also_from_its_passage_vector_cache(bi_encoder_dir):
    eager = GLiClassReranker.from_pretrained(bi_encoder_dir, device="cpu", dtype="float32")
    compiled = GLiClassReranker.from_pretrained(bi_encoder_dir, device="cpu", dtype="float32",
                                                compile="reduce-overhead")
    assert isinstance(compiled.model.label_encoder, CudaGraphSafe)
    assert isinstance(compiled.model.encoder_model, CudaGraphSafe)
    expected = eager.score(QUERY, PASSAGES)
    assert compiled.score(QUERY, PASSAGES) == pytest.approx(expected, abs=TOL)  # vectors computed, then cached
    assert compiled.passage_cache_stats()["misses"] == len(PASSAGES)
    assert compiled.score(QUERY, PASSAGES) == pytest.approx(expected, abs=TOL)  # vectors read from the cache
    assert compiled.passage_cache_stats()["hits"] == len(PASSAGES)


# ---------------------------------------------------------------------------- command line
def _rerank_options(*flags: str) -> dict:
    args = cli.build_parser().parse_args(["rerank", "--model", "m", *flags, "--query", "q", "--passages", "p"])
    return cli.model_options(args)


def test_the_compile_flag_keeps_its_meaning_and_a_mode_implies_it():
    assert "compile" not in _rerank_options()
    assert _rerank_options("--compile") == {"compile": True}
    assert _rerank_options("--compile-mode", "reduce-overhead") == {"compile": "reduce-overhead"}
    assert _rerank_options("--compile", "--compile-mode", "max-autotune") == {"compile": "max-autotune"}
    for mode in COMPILE_MODES:
        assert _rerank_options("--compile-mode", mode) == {"compile": mode}


def test_the_compile_flag_never_takes_the_next_positional_argument():
    from gliclass_rerank import indexing

    parser = argparse.ArgumentParser()
    indexing.add_arguments(parser)
    args = parser.parse_args(["--model", "m", "--store", "sqlite:///v.db", "--compile", "corpus.jsonl"])
    assert args.compile is True and args.corpus == "corpus.jsonl"


def test_a_bad_compile_mode_is_refused_on_the_command_line(capsys):
    with pytest.raises(SystemExit):
        _rerank_options("--compile-mode", "fast")
    assert "invalid choice: 'fast'" in capsys.readouterr().err


def test_serve_passes_the_compile_mode_through():
    from gliclass_rerank.server import cli as server_cli

    parser = argparse.ArgumentParser()
    server_cli.add_arguments(parser)
    args = parser.parse_args(["--model", "m", "--compile-mode", "reduce-overhead"])
    assert server_cli._model_options(args)["compile"] == "reduce-overhead"
    assert server_cli._model_options(parser.parse_args(["--model", "m", "--compile"]))["compile"] is True


# ---------------------------------------------------------------------------- the GPU benchmark's names
def test_gpu_benchmark_checks_name_its_compiled_systems_and_judge_the_tolerance():
    gpu = pytest.importorskip("benchmarks.speed.gpu")
    from benchmarks.speed.systems import spec_name

    names = [spec_name(spec) for spec in gpu.COMPILED]
    assert names == ["ours-compile", "ours-bfloat16-compile", "ours-cudagraphs", "ours-bfloat16-cudagraphs"]
    assert {compiled for compiled, _ in gpu.COMPILE_CHECKS.values()} == set(names)
    assert {eager for _, eager in gpu.COMPILE_CHECKS.values()} <= {spec_name(spec) for spec in gpu.SYSTEMS}
    verdicts = gpu.compile_verdicts({"compile_vs_eager_fp32_max_abs_diff": 3e-7,
                                     "cudagraphs_vs_eager_fp32_max_abs_diff": 2e-4,
                                     "ours_bf16_vs_fp32_max_abs_diff": 0.01,
                                     "compile_vs_eager_bf16_max_abs_diff": 0.004})
    assert [v.rsplit("**", 2)[1] for v in verdicts] == ["PASS", "FAIL", "PASS"]


@pytest.mark.parametrize("mode", [True, "reduce-overhead"])
def test_a_compiled_reranker_saves_the_eager_weight_names(mode, tiny_model_dir, tmp_path):
    from safetensors import safe_open

    eager = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu")
    compiled = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", compile=mode)  # compiles lazily
    compiled.save_pretrained(tmp_path / "saved")
    with safe_open(str(next((tmp_path / "saved").glob("*.safetensors"))), "pt") as saved, \
            safe_open(str(next(Path(tiny_model_dir).glob("*.safetensors"))), "pt") as original:
        assert sorted(saved.keys()) == sorted(original.keys())
    reloaded = GLiClassReranker.from_pretrained(tmp_path / "saved", device="cpu")
    assert reloaded.score(QUERY, PASSAGES) == eager.score(QUERY, PASSAGES)


def test_an_int8_reranker_refuses_to_save_instead_of_crashing(tiny_model_dir, tmp_path):
    quantized = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", dtype="float32", quantize="int8")
    with pytest.raises(ValueError, match="quantize='int8'"):
        quantized.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()
