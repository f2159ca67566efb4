"""Behaviour of the public scoring API on a tiny random checkpoint."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from gliclass_rerank import GLiClassReranker, RerankResult
from gliclass_rerank.packing import pack_task
from gliclass_rerank.results import rank
from gliclass_rerank.tokenization import TokenizedPiece

QUERY = "which team won the football match"
PASSAGES = [
    "The football team won the championship after a penalty shootout.",
    "She baked a chocolate cake with fresh strawberries.",
    "The central bank raised interest rates.",
    "The hockey team lost the match on ice.",
    "Heavy rain is expected this weekend.",
]


def test_rerank_sorts_by_score_and_indexes_into_the_input(reranker):
    results = reranker.rerank(QUERY, PASSAGES)
    assert sorted(r.index for r in results) == list(range(len(PASSAGES)))
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    for r in results:
        assert isinstance(r, RerankResult)
        assert r.text == PASSAGES[r.index]
        assert 0.0 <= r.score <= 1.0
    by_index = {r.index: r.score for r in results}
    assert reranker.score(QUERY, PASSAGES) == pytest.approx([by_index[i] for i in range(len(PASSAGES))], abs=0)


def test_raw_logits_are_the_scores_before_the_sigmoid(reranker):
    logits = reranker.score(QUERY, PASSAGES, raw=True)
    np.testing.assert_allclose(1 / (1 + np.exp(-np.array(logits))), reranker.score(QUERY, PASSAGES), atol=1e-6)
    for r in reranker.rerank(QUERY, PASSAGES):
        assert r.logit == pytest.approx(logits[r.index], abs=1e-6)


def test_scores_are_not_constant(reranker):
    scores = reranker.score(QUERY, PASSAGES)
    assert max(scores) - min(scores) > 1e-3


def test_same_call_gives_the_same_scores(reranker):
    assert reranker.score(QUERY, PASSAGES) == reranker.score(QUERY, PASSAGES)


def test_large_logits_do_not_tie_in_the_ranking():
    # sigmoid(17) and sigmoid(18) are the same float32 (1.0): the order must come from the logits.
    logits = np.array([16.5, 18.0, 17.0, 30.0, 2.0])
    results = rank(1 / (1 + np.exp(-logits)), ["a", "b", "c", "d", "e"], [False] * 5, logits=logits)
    assert [r.index for r in results] == [3, 1, 2, 0, 4]
    assert [r.logit for r in results] == [30.0, 18.0, 17.0, 16.5, 2.0]


def test_probabilities_keep_double_precision(reranker, monkeypatch):
    import gliclass_rerank.reranker as module

    big = np.array([17.0, 18.0, 19.0], dtype=np.float32)
    monkeypatch.setattr(reranker, "_score_queries", lambda queries, passages, mode: ([big], [[False] * 3]))
    scores = reranker.score("q", ["a", "b", "c"])
    assert scores[0] < scores[1] < scores[2] < 1.0  # distinct, not rounded to 1.0
    assert [r.index for r in reranker.rerank("q", ["a", "b", "c"])] == [2, 1, 0]
    assert module._sigmoid(np.array([17.0], dtype=np.float32)).dtype == np.float64


def test_top_n_and_threshold(reranker):
    full = reranker.rerank(QUERY, PASSAGES)
    assert reranker.rerank(QUERY, PASSAGES, top_n=2) == full[:2]
    assert reranker.rerank(QUERY, PASSAGES, top_n=100) == full
    cut = full[2].score
    kept = reranker.rerank(QUERY, PASSAGES, threshold=cut)
    assert kept == [r for r in full if r.score >= cut] and len(kept) >= 3
    top = full[0].score
    assert reranker.rerank(QUERY, PASSAGES, threshold=top) == [r for r in full if r.score >= top]
    assert reranker.rerank(QUERY, PASSAGES, threshold=top)[0] == full[0]


def test_ties_keep_input_order():
    results = rank(np.array([0.5, 0.9, 0.5, 0.5], dtype=np.float32), ["a", "b", "c", "d"], [False] * 4)
    assert [r.index for r in results] == [1, 0, 2, 3]


@pytest.mark.parametrize("top_n", [0, -1, 1.5, True])
def test_bad_top_n_is_refused(reranker, top_n):
    with pytest.raises(ValueError, match="top_n"):
        reranker.rerank(QUERY, PASSAGES, top_n=top_n)


@pytest.mark.parametrize("threshold", [-0.1, 1.01, "0.5"])
def test_bad_threshold_is_refused(reranker, threshold):
    with pytest.raises(ValueError, match="threshold"):
        reranker.rerank(QUERY, PASSAGES, threshold=threshold)


def test_bad_queries_and_passages_are_named(reranker):
    with pytest.raises(ValueError, match="query is empty"):
        reranker.rerank("   ", PASSAGES)
    with pytest.raises(TypeError, match="query must be a string"):
        reranker.rerank(42, PASSAGES)
    with pytest.raises(TypeError, match=r"passages\[1\]"):
        reranker.rerank(QUERY, ["ok", None, "fine"])
    with pytest.raises(TypeError, match=r"passages\[0\]"):
        reranker.rerank(QUERY, [b"bytes"])
    with pytest.raises(TypeError, match="list of strings"):
        reranker.rerank(QUERY, "one string instead of a list")
    with pytest.raises(ValueError, match="mode"):
        reranker.rerank(QUERY, PASSAGES, mode="pairwise")


def test_empty_passage_list_and_empty_passage(reranker):
    assert reranker.rerank(QUERY, []) == []
    results = reranker.rerank(QUERY, ["", "football"])
    assert len(results) == 2 and all(0.0 <= r.score <= 1.0 for r in results)


def test_a_megabyte_passage_is_cut_and_reported(reranker):
    huge = "football " * 120_000  # ~1 MB
    results = reranker.rerank(QUERY, [huge, "short passage"])
    flags = {r.index: r.truncated for r in results}
    assert flags == {0: True, 1: False}
    assert results[[r.index for r in results].index(0)].text == huge  # the original text, not the cut one


def test_max_passage_tokens_cuts_and_reports(tiny_model_dir):
    small = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", max_passage_tokens=4)
    results = small.rerank(QUERY, ["the team", "the team won the match on the ice"])
    assert {r.index: r.truncated for r in results} == {0: False, 1: True}


def test_every_passage_is_scored_when_they_overflow_a_sequence(tiny_model_dir):
    # 60 passages of ~40 tokens cannot share one 128-token sequence: they spill into more sequences.
    small = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", max_length=128, passages_per_pass=32)
    passages = [f"passage {i} " + "about the football team and the match " * 5 for i in range(60)]
    results = small.rerank(QUERY, passages)
    assert sorted(r.index for r in results) == list(range(60))
    assert len({round(r.score, 6) for r in results}) > 10  # scored from real tokens, not padding


def test_packing_respects_max_length_and_passages_per_pass():
    labels = [TokenizedPiece(tuple(range(10, 10 + n)), False) for n in (3, 50, 7, 1, 0, 200, 4)]
    from gliclass_rerank.packing import Layout

    layout = Layout(prefix=(1,), suffix=(2,), label_id=7, sep_id=8, pad_id=0, prompt_first=True,
                    extract_text_features=False)
    sequences, cuts = pack_task(0, [5, 5, 5], labels, layout, max_length=64, max_labels_per_pass=3)
    assert sorted(i for s in sequences for i in s.labels) == list(range(len(labels)))
    assert all(len(s.ids) <= 64 and len(s.labels) <= 3 for s in sequences)
    assert cuts == [False, False, False, False, False, True, False]
    for s in sequences:
        assert s.ids[0] == 1 and s.ids[-1] == 2 and s.ids[s.sep_pos] == 8
        assert s.ids[s.sep_pos + 1 : s.sep_pos + 4] == [5, 5, 5]  # prompt_first: the text follows <<SEP>>
        assert all(s.ids[p] == 7 for p in s.label_pos)


def _layout():
    from gliclass_rerank.packing import Layout

    return Layout(prefix=(1,), suffix=(2,), label_id=7, sep_id=8, pad_id=0, prompt_first=True,
                  extract_text_features=False)


def test_packing_target_groups_short_labels_and_isolates_long_ones():
    # text 3 + overhead 3 = 6 fixed tokens; each label costs 1 marker + its ids.
    short = [TokenizedPiece(tuple(range(10, 19)), False) for _ in range(10)]  # 10 tokens each, marker included
    sequences, _ = pack_task(0, [5, 5, 5], short, _layout(), max_length=512, max_labels_per_pass=16,
                             target_length=46)
    assert [len(s.labels) for s in sequences] == [4, 4, 2]  # 6 + 4 * 10 = 46 <= 46 < 56
    assert all(len(s.ids) <= 46 for s in sequences)

    long = [TokenizedPiece(tuple(range(10, 210)), False) for _ in range(3)]  # 201 tokens each
    sequences, cuts = pack_task(0, [5, 5, 5], long, _layout(), max_length=512, max_labels_per_pass=16,
                                target_length=100)
    # Longer than the target on its own: one per sequence, never cut by the (soft) target.
    assert [s.labels for s in sequences] == [[0], [1], [2]]
    assert cuts == [False, False, False] and all(len(s.ids) == 6 + 201 for s in sequences)

    untargeted, _ = pack_task(0, [5, 5, 5], long, _layout(), max_length=512, max_labels_per_pass=16)
    assert [s.labels for s in untargeted] == [[0, 1], [2]]  # up to the hard cap


def test_plan_batches_by_tokens():
    from gliclass_rerank.packing import PackedSequence, plan_batches

    lengths = [50, 10, 200, 30, 30, 120, 10, 500]
    sequences = [PackedSequence([0] * n, 0, [0], [0], [1], 0) for n in lengths]
    plan = plan_batches(sequences, batch_size=3, max_batch_tokens=250)
    assert sorted(i for batch in plan for i in batch) == list(range(len(lengths)))  # each once
    flat = [lengths[i] for batch in plan for i in batch]
    assert flat == sorted(lengths)  # length order: least padding
    for batch in plan:
        assert len(batch) <= 3
        widest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * widest <= 250  # an over-budget sequence still runs alone
    assert plan[-1] == [lengths.index(500)]
    assert [len(b) for b in plan_batches(sequences, batch_size=3)] == [3, 3, 2]  # no token budget


def test_scores_do_not_depend_on_batching_knobs(tiny_model_dir, reranker):
    passages = PASSAGES * 4 + ["a longer passage about the football match " * 12]
    default = reranker.score(QUERY, passages)
    for options in ({"batch_size": 1, "max_batch_tokens": None}, {"batch_size": 64, "max_batch_tokens": 64}):
        other = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", **options)
        np.testing.assert_allclose(other.score(QUERY, passages), default, atol=1e-5)


def test_batch_defaults_follow_the_device(tiny_model_dir):
    import torch

    from gliclass_rerank.reranker import batch_defaults

    assert batch_defaults(torch.device("cpu"), None, "auto") == (64, 8192)
    assert batch_defaults(torch.device("cuda"), None, "auto") == (256, 65536)
    assert batch_defaults(torch.device("cuda"), 8, None) == (8, None)  # what the caller sets is kept
    model = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu")
    assert (model.batch_size, model.max_batch_tokens) == (64, 8192)
    with pytest.raises(ValueError, match="max_batch_tokens='lots'"):
        GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", max_batch_tokens="lots")


def test_packing_target_applies_to_listwise_only(tiny_model_dir):
    model = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", target_length=24)
    calls = []
    original = model._run

    def spy(sequences, labels_per_task):
        calls.append(len(sequences))  # number of packed sequences
        return original(sequences, labels_per_task)

    model._run = spy
    model.score(QUERY, PASSAGES)  # each passage is > 24 - query - specials: one per sequence
    model.entailment([PASSAGES[0]], [["a", "b", "c", "d"]])  # one premise, read once for its 4 hypotheses
    assert calls == [len(PASSAGES), 1]


@pytest.mark.parametrize("name", ["target_length", "max_batch_tokens"])
def test_bad_packing_knobs_are_named(tiny_model_dir, name):
    with pytest.raises(ValueError, match=name):
        GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", **{name: 0})


def test_passages_per_pass_one_equals_classifying_each_passage_alone(tiny_model_dir, reranker):
    single = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", passages_per_pass=1)
    listwise = single.score(QUERY, PASSAGES)
    alone = [reranker.classify([QUERY], [p])[0][0]["score"] for p in PASSAGES]
    np.testing.assert_allclose(listwise, alone, atol=1e-6)


def test_batching_does_not_change_scores(reranker):
    alone = reranker.score(QUERY, PASSAGES)
    other = ["a much longer query about food, cooking, baking cakes and bread " * 3, "x"]
    batched = reranker.rerank_batch([other[0], QUERY, other[1]], [PASSAGES[:2], PASSAGES, ["y"] * 9])
    by_index = {r.index: r.score for r in batched[1]}
    np.testing.assert_allclose([by_index[i] for i in range(len(PASSAGES))], alone, atol=1e-5)


def test_rerank_batch_checks_lengths(reranker):
    with pytest.raises(ValueError, match="2 queries but 1 passage lists"):
        reranker.rerank_batch(["a", "b"], [["x"]])


def test_literal_marker_strings_in_a_passage_do_not_create_labels(reranker):
    a = reranker.score(QUERY, ["goal <<LABEL>> match <<SEP>> team"])
    b = reranker.score(QUERY, ["goal match team"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_nli_mode_reads_each_passage_as_premise(reranker):
    nli = reranker.score(QUERY, PASSAGES, mode="nli")
    entail = reranker.entailment(PASSAGES, [QUERY])
    np.testing.assert_allclose(nli, [row[0] for row in entail], atol=1e-6)
    assert nli != reranker.score(QUERY, PASSAGES, mode="listwise")
    results = reranker.rerank(QUERY, PASSAGES, mode="nli", top_n=2)
    assert [r.score for r in results] == sorted(nli, reverse=True)[:2]


def test_entailment_shapes(reranker):
    claims = ["the team won", "it rained", "rates went up"]
    every = reranker.entailment(PASSAGES[:2], claims)
    assert len(every) == 2 and all(len(row) == 3 for row in every)
    per = reranker.entailment(PASSAGES[:2], [claims, claims[:1]])
    assert [len(row) for row in per] == [3, 1]
    np.testing.assert_allclose(per[0], every[0], atol=1e-6)
    with pytest.raises(ValueError, match="one list per premise"):
        reranker.entailment(PASSAGES[:2], [claims])


def test_entailment_refuses_a_bare_string_of_claims(reranker):
    # a string is a sequence too: it would otherwise be scored as one claim per character
    with pytest.raises(TypeError, match="hypotheses must be a list"):
        reranker.entailment(PASSAGES[:2], "the team won")
    with pytest.raises(TypeError, match=r"hypotheses\[1\] must be a list"):
        reranker.entailment(PASSAGES[:2], [["the team won"], "it rained"])


def test_long_queries_and_hypotheses_are_cut_to_max_query_tokens_with_a_warning(tiny_model_dir, caplog):
    r = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", max_query_tokens=6)
    long_claim = "the football team won the championship after a long and dramatic penalty shootout"
    longer = long_claim + " in the rain on a cold evening"
    assert len(r.pieces.labels([long_claim])[0].ids) > 6
    with caplog.at_level("WARNING", logger="gliclass_rerank.reranker"):
        cut = r.entailment(PASSAGES[:2], [long_claim, "it rained"])
        # only the first 6 tokens are read, exactly as training reads a hypothesis: a longer tail changes nothing
        assert r.entailment(PASSAGES[:2], [longer, "it rained"]) == cut
        assert r.rerank(longer, PASSAGES) == r.rerank(long_claim, PASSAGES)
        as_scores = lambda out: [x["score"] for x in out[0]]  # noqa: E731
        assert as_scores(r.classify(PASSAGES[0], [longer, "food"])) == pytest.approx(
            as_scores(r.classify(PASSAGES[0], [long_claim, "food"])), abs=1e-7)
    warnings = [rec.getMessage() for rec in caplog.records if "max_query_tokens=6" in rec.getMessage()]
    assert len(warnings) == 1  # once per reranker, not per call


def test_classify_multi_and_single_label(reranker):
    labels = ["sports", "food", "finance", "weather"]
    multi = reranker.classify(["The football team won", "Rain is expected"], labels)
    assert len(multi) == 2 and all(sorted(d["label"] for d in row) == sorted(labels) for row in multi)
    single = reranker.classify("The football team won", labels, multi_label=False)[0]
    assert sum(d["score"] for d in single) == pytest.approx(1.0, abs=1e-5)
    ranked = [d["label"] for d in single]
    assert ranked == [d["label"] for d in multi[0]]  # softmax and sigmoid order the same logits alike
    some = reranker.classify("The football team won", labels, threshold=multi[0][1]["score"])[0]
    assert [d["label"] for d in some] == [d["label"] for d in multi[0][:2]]
    assert [d["score"] for d in some] == pytest.approx([d["score"] for d in multi[0][:2]], abs=1e-6)
    with pytest.raises(ValueError, match="labels is empty"):
        reranker.classify("text", [])


def test_many_long_labels_are_all_scored_in_classify(tiny_model_dir):
    small = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", max_length=96)
    labels = [f"label {i} " + "food and cooking " * 6 for i in range(30)]
    out = small.classify("The football team won the match", labels, multi_label=False)[0]
    assert len(out) == 30 and sum(d["score"] for d in out) == pytest.approx(1.0, abs=1e-5)


def test_ten_thousand_passages(reranker):
    passages = [f"passage {i} on football" for i in range(10_000)]
    results = reranker.rerank(QUERY, passages, top_n=5)
    assert len(results) == 5 and all(0 <= r.index < 10_000 for r in results)


def test_token_ids_are_cached(reranker, monkeypatch):
    calls = []
    original = reranker.pieces._encodings

    def counting(strings):
        calls.append(len(strings))
        return original(strings)

    monkeypatch.setattr(reranker.pieces, "_encodings", counting)
    fresh = [f"never seen before {i}" for i in range(4)]
    reranker.score("a brand new query", fresh)
    reranker.score("a brand new query", fresh)
    assert calls == [1, 4]  # the query, then the passages; the second call tokenises nothing


def test_callers_tokenizer_settings_do_not_change_scores(reranker):
    passages = ["brand new passage about the football team", "another new passage about the football team"]
    before = reranker.score(QUERY, passages)
    reranker.pieces.clear_cache()  # so the call below tokenises everything again
    reranker.tokenizer(["x y z"], truncation=True, max_length=3, padding="max_length")  # mutates its backend
    assert reranker.score(QUERY, passages) == pytest.approx(before, abs=1e-7)
    assert len(reranker.pieces.labels(["one two three four five six"])[0].ids) > 3


def test_threads_share_one_reranker(reranker):
    expected = reranker.score(QUERY, PASSAGES)
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(reranker.score(QUERY, PASSAGES))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 20 and all(r == expected for r in results)


def test_bfloat16_scores_stay_close_to_float32(tiny_model_dir, reranker):
    half = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert half.dtype.is_floating_point and str(half.dtype) == "torch.bfloat16"
    np.testing.assert_allclose(half.score(QUERY, PASSAGES), reranker.score(QUERY, PASSAGES), atol=0.05)


def test_int8_quantisation_option(tiny_model_dir, reranker):
    quantised = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", quantize="int8")
    np.testing.assert_allclose(quantised.score(QUERY, PASSAGES), reranker.score(QUERY, PASSAGES), atol=0.05)
    with pytest.raises(ValueError, match="quantize"):
        GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", quantize="int4")


def test_device_and_dtype_choices(tiny_model_dir, reranker):
    assert reranker.device.type == "cpu"
    auto = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", dtype="auto")
    assert str(auto.dtype) == "torch.float32"  # fp32 on CPU
    with pytest.raises(ValueError, match="dtype"):
        GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", dtype="float8")
    with pytest.raises(ValueError, match="device"):
        GLiClassReranker.from_pretrained(tiny_model_dir, device="toaster")
    with pytest.raises(ValueError, match="torch.int8"):  # not a dtype a model can run in
        GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", dtype=torch.int8)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:7'.*CUDA is not available"):
            GLiClassReranker.from_pretrained(tiny_model_dir, device="cuda:7")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="'mps'.*MPS is not available"):
            GLiClassReranker.from_pretrained(tiny_model_dir, device="mps")
    with pytest.raises(ValueError, match="max_query_tokens=400 leaves no room"):
        GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", max_length=128, max_query_tokens=400)
    short = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", max_length=40)
    assert short.max_query_tokens < 40  # the default budget shrinks to fit the sequence
    assert len(short.score(QUERY, PASSAGES[:2])) == 2
    with pytest.raises(ValueError, match="max_length"):
        GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", max_length=4096)
    with pytest.raises(ValueError, match="passages_per_pass"):
        GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", passages_per_pass=0)


def test_warm_up_runs_a_single_sequence_and_a_batch_and_leaves_no_cache(tiny_model_dir):
    r = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu")
    shapes = []
    r.model.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].input_ids.shape)))
    before = r.score(QUERY, PASSAGES)
    shapes.clear()
    r.warm_up()
    # torch.compile specialises a batch of one: both kinds of graph get built before serving
    assert any(batch == 1 for batch, _ in shapes) and any(batch > 1 for batch, _ in shapes)
    assert len(r.pieces._cache) == 0  # the filler text is not kept
    assert r.score(QUERY, PASSAGES) == before


def test_reuse_loaded_shares_a_model_and_refuses_loading_options(reranker):
    from gliclass_rerank.reranker import reuse_loaded

    assert reuse_loaded("knowledgator/gliclass-edge-v3.0", device="cpu") is None  # a name: the adapter loads it
    assert reuse_loaded(reranker, device=None, model_kwargs={}) is reranker  # unset options are fine
    with pytest.raises(ValueError, match="^device, dtype configure loading a model"):
        reuse_loaded(reranker, device="cpu", dtype="float16", max_length=None)
