"""Checkpoint loading: local folders, Hub ids through the standard cache, weight formats, config errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gliclass_rerank import GLiClassConfig, GLiClassReranker, UnsupportedConfigError
from gliclass_rerank.cli import main as cli_main

QUERY = "which team won the football match"
PASSAGES = ["The football team won the final.", "She baked a cake.", "Rates went up."]


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _edit_config(folder, **changes):
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_hub_id_loads_through_the_huggingface_cache(tiny_model_dir, tmp_path, reranker):
    """A repo id resolves through huggingface_hub's cache layout (offline here, a download for users)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-gliclass"
    _copy(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = textwrap.dedent(
        f"""
        import json
        from gliclass_rerank import GLiClassReranker
        r = GLiClassReranker.from_pretrained("acme/tiny-gliclass", device="cpu")
        print(json.dumps(r.score({QUERY!r}, {PASSAGES!r})))
        """
    )
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    scores = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(scores, reranker.score(QUERY, PASSAGES), atol=1e-6)


def test_pytorch_bin_weights_load_with_weights_only(tiny_model_dir, tmp_path, reranker):
    folder = _copy(tiny_model_dir, tmp_path / "bin")
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    loaded = GLiClassReranker.from_pretrained(folder, device="cpu")
    np.testing.assert_allclose(loaded.score(QUERY, PASSAGES), reranker.score(QUERY, PASSAGES), atol=1e-7)


class Payload:
    """Stands for an arbitrary object in a pickle: weights_only loading must refuse it."""


def test_pickled_objects_are_refused(tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path / "evil")
    (folder / "model.safetensors").unlink()
    torch.save({"model.logit_scale": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        GLiClassReranker.from_pretrained(folder, device="cpu")


def test_missing_and_misshapen_weights_are_named(tiny_model_dir, tmp_path):
    from safetensors.torch import save_file

    folder = _copy(tiny_model_dir, tmp_path / "missing")
    state = load_file(str(folder / "model.safetensors"))
    del state["model.text_projector.linear_1.weight"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="text_projector.linear_1.weight"):
        GLiClassReranker.from_pretrained(folder, device="cpu")

    folder = _copy(tiny_model_dir, tmp_path / "shape")
    _edit_config(folder, hidden_size=48)  # the projector weights are 32 wide
    with pytest.raises(ValueError, match="shape"):
        GLiClassReranker.from_pretrained(folder, device="cpu")


def test_no_weights_and_no_config(tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path / "noweights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        GLiClassReranker.from_pretrained(folder, device="cpu")
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        GLiClassReranker.from_pretrained(folder, device="cpu")


def test_tokenizer_and_config_must_agree_on_marker_ids(tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path / "ids")
    data = json.loads((folder / "config.json").read_text())
    _edit_config(folder, class_token_index=data["class_token_index"] + 1, text_token_index=data["class_token_index"])
    with pytest.raises(ValueError, match="class_token_index"):
        GLiClassReranker.from_pretrained(folder, device="cpu")


@pytest.fixture(scope="module")
def base_config(tiny_model_dir):
    return json.loads((tiny_model_dir / "config.json").read_text())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_type", "bert"),
        ("architecture_type", "encoder-decoder"),
        ("architecture_type", "decoder-kv"),
        ("pooling_strategy", "bogus"),
        ("class_token_pooling", "median"),
        ("scorer_type", "cross-attn"),
        ("use_lstm", True),
        ("use_calibrator", True),
        ("normalize_features", "yes"),
        ("encoder_layer_id", 7),
        ("logit_bias", "high"),
        ("logit_bias", "-2.5"),
        ("logit_bias", True),
        ("logit_bias", None),
        ("logit_bias", [1.0]),
        ("logit_bias", float("inf")),
    ],
)
def test_unsupported_config_values_name_the_field(base_config, field, value):
    data = dict(base_config, **{field: value})
    with pytest.raises(UnsupportedConfigError) as error:
        GLiClassConfig.from_dict(data)
    assert repr(field) in str(error.value) and repr(value) in str(error.value)


def test_config_round_trips_and_fills_upstream_defaults(base_config):
    config = GLiClassConfig.from_dict(base_config)
    again = GLiClassConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    minimal = {"model_type": "GLiClass", "encoder_config": {"model_type": "bert", "vocab_size": 100}}
    parsed = GLiClassConfig.from_dict(minimal)
    # upstream's defaults: markers right after the vocabulary, "first" poolings, simple scorer
    assert (parsed.class_token_index, parsed.text_token_index) == (100, 101)
    assert (parsed.pooling_strategy, parsed.class_token_pooling, parsed.scorer_type) == ("first", "first", "simple")
    with pytest.raises(UnsupportedConfigError, match="encoder_config"):
        GLiClassConfig.from_dict({"model_type": "GLiClass"})


def test_logit_bias_is_read_added_to_the_logits_and_saved(tiny_model_dir, base_config, reranker, tmp_path):
    # Absent (every upstream checkpoint): 0.0, and not written back, so the saved config stays upstream's.
    assert "logit_bias" not in base_config
    config = GLiClassConfig.from_dict(base_config)
    assert config.logit_bias == 0.0 and "logit_bias" not in config.to_dict()
    assert "logit_bias" not in GLiClassConfig.from_dict(dict(base_config, logit_bias=0)).to_dict()
    assert GLiClassConfig.from_dict(dict(base_config, logit_bias=-3)).logit_bias == -3.0  # an int is a number too

    folder = _copy(tiny_model_dir, tmp_path / "biased")
    _edit_config(folder, logit_bias=-1.75)
    biased = GLiClassReranker.from_pretrained(folder, device="cpu", dtype="float32")
    assert biased.model.config.logit_bias == -1.75
    want = np.array(reranker.score(QUERY, PASSAGES, raw=True)) - 1.75
    np.testing.assert_allclose(biased.score(QUERY, PASSAGES, raw=True), want, atol=1e-5)
    np.testing.assert_allclose(biased.score(QUERY, PASSAGES), 1 / (1 + np.exp(-want)), atol=1e-6)
    assert [r.index for r in biased.rerank(QUERY, PASSAGES)] == [r.index for r in reranker.rerank(QUERY, PASSAGES)]

    biased.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["logit_bias"] == -1.75
    assert {k: v for k, v in saved.items() if k != "logit_bias"} == json.loads(
        (tiny_model_dir / "config.json").read_text()
    )
    again = GLiClassReranker.from_pretrained(tmp_path / "saved", device="cpu", dtype="float32")
    assert again.score(QUERY, PASSAGES, raw=True) == biased.score(QUERY, PASSAGES, raw=True)


def test_save_pretrained_round_trip(reranker, tmp_path):
    reranker.save_pretrained(tmp_path / "saved")
    again = GLiClassReranker.from_pretrained(tmp_path / "saved", device="cpu")
    assert again.score(QUERY, PASSAGES) == reranker.score(QUERY, PASSAGES)


def test_cli_rerank_prints_json_lines(tiny_model_dir, tmp_path, capsys, reranker):
    passages = tmp_path / "passages.jsonl"
    passages.write_text(
        "\n".join([json.dumps(PASSAGES[0]), json.dumps({"text": PASSAGES[1]}), json.dumps(PASSAGES[2])]) + "\n"
    )
    assert cli_main(["rerank", "--model", str(tiny_model_dir), "--device", "cpu", "--query", QUERY,
                     "--passages", str(passages), "--top-n", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = reranker.rerank(QUERY, PASSAGES, top_n=2)
    assert [(d["rank"], d["index"], d["text"]) for d in lines] == [(i + 1, r.index, r.text) for i, r in enumerate(expected)]
    assert [d["score"] for d in lines] == pytest.approx([r.score for r in expected], abs=1e-6)

    passages.write_text('{"oops": 1}\n')
    with pytest.raises(SystemExit, match="line|:1:"):
        cli_main(["rerank", "--model", str(tiny_model_dir), "--query", QUERY, "--passages", str(passages)])
    with pytest.raises(SystemExit, match="top_n"):
        cli_main(["rerank", "--model", str(tiny_model_dir), "--device", "cpu", "--query", QUERY,
                  "--passages", "/dev/null", "--top-n", "0"])


def test_cli_speed_options_reach_the_model(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from gliclass_rerank import cli

    seen = {}
    original = GLiClassReranker.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.update(kwargs)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(GLiClassReranker, "from_pretrained", classmethod(spy))
    passages = tmp_path / "passages.jsonl"
    passages.write_text("\n".join(json.dumps(p) for p in PASSAGES) + "\n")
    assert cli.main(["rerank", "--model", str(tiny_model_dir), "--device", "cpu", "--query", QUERY,
                     "--passages", str(passages), "--quantize", "int8"]) == 0
    assert seen["quantize"] == "int8" and "compile" not in seen
    assert len(capsys.readouterr().out.splitlines()) == len(PASSAGES)


# ---------------------------------------------------------------------------- errors that name their cause
def test_mistyped_local_folder_names_the_path(monkeypatch, tmp_path):
    import huggingface_hub

    def no_network(*args, **kwargs):  # a path must never be sent to the Hub
        raise AssertionError("hf_hub_download called for a local path")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    for name in (str(tmp_path / "no-such-model"), "./no-such-model", "../models/nope", "~/nope", "a/b/c"):
        with pytest.raises(FileNotFoundError, match="model folder not found: .*does not exist"):
            GLiClassReranker.from_pretrained(name, device="cpu")


def test_a_file_instead_of_a_folder_is_named(tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="is a file: give the checkpoint's folder"):
        GLiClassReranker.from_pretrained(tiny_model_dir / "config.json", device="cpu")


def test_hub_id_offline_and_not_cached_says_what_to_do(tmp_path):
    """HF_HUB_OFFLINE=1 and an empty cache: an immediate error (no retries) that says how to fix it."""
    script = "from gliclass_rerank import GLiClassReranker\nGLiClassReranker.from_pretrained('acme/not-cached')"
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode != 0
    assert "CheckpointNotFoundError" in out.stderr
    assert "HF_HUB_OFFLINE is set and it is not in the local cache" in out.stderr
    assert "pass a local checkpoint folder" in out.stderr
    assert "Retry" not in out.stderr


def test_hub_unreachable_says_so(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("connection error and not in cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(FileNotFoundError, match="could not be reached.*set HF_HUB_OFFLINE=1"):
        GLiClassReranker.from_pretrained("acme/unreachable", device="cpu")


def test_repository_the_hub_does_not_have(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    def missing(*args, **kwargs):
        raise RepositoryNotFoundError.__new__(RepositoryNotFoundError)  # as raised on a 404

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", missing)
    with pytest.raises(FileNotFoundError, match="neither a local folder .* nor a Hub repository"):
        GLiClassReranker.from_pretrained("acme/missing", device="cpu")


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"model_type": "GLiClass",\n  "encoder_config": {,\n}', r"config\.json: not valid JSON at line 2, column 22"),
        ('[1, 2, 3]', r"config\.json: .*holds a JSON object, not a list"),
        ('"GLiClass"', r"config\.json: .*holds a JSON object, not a str"),
    ],
)
def test_malformed_config_names_the_file_and_line(tiny_model_dir, tmp_path, text, expected):
    folder = _copy(tiny_model_dir, tmp_path / "broken")
    (folder / "config.json").write_text(text)
    with pytest.raises(UnsupportedConfigError, match=expected) as caught:
        GLiClassReranker.from_pretrained(folder, device="cpu")
    assert str(folder / "config.json") in str(caught.value)


def test_cli_reports_a_missing_folder_in_one_line(tmp_path):
    passages = tmp_path / "passages.jsonl"
    passages.write_text('"a passage"\n')
    with pytest.raises(SystemExit, match="gliclass-rerank: model folder not found"):
        cli_main(["rerank", "--model", str(tmp_path / "nope"), "--query", "q", "--passages", str(passages)])


def test_a_test_checkpoint_says_its_scores_are_noise(tiny_model_dir, caplog):
    with caplog.at_level("WARNING", logger="gliclass_rerank"):
        GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu")
    noise = [r for r in caplog.records if "weights are random" in r.getMessage()]
    assert len(noise) == 1 and "gliclass_rerank.testing" in noise[0].getMessage()
