"""Perplexity: held-out shards (`anvil eval`) and per-document scores, against transformers' own
loss, independent of batching; and the `perplexity` curation step's buckets and threshold."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from data_pipeline.document import Document
from data_pipeline.sample import iter_sample_documents
from framework.eval.perplexity import evaluate_prefix, load_scorer, score_texts
from tests.framework.interop.hf_fixtures import tiny_llama_folder


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ppl")
    folder = tiny_llama_folder(tmp / "lm", seed=3)
    return tmp, folder, load_scorer(folder)


@pytest.fixture(scope="module")
def prefix(lm):
    from data_pipeline.tokens.tokenize import Source, tokenize_sources

    tmp, folder, _ = lm
    docs = list(iter_sample_documents(40))
    tokenize_sources(
        [Source("s", {"n": 40}, lambda on_reject=None: iter(docs))],
        str(folder / "tokenizer.json"),
        str(tmp / "tok" / "s"),
        progress=False,
    )
    return str(tmp / "tok" / "s")


def test_eval_matches_transformers_loss(lm, prefix):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    _, _, scorer = lm
    got = evaluate_prefix(scorer, [prefix], seq_len=64, batch_size=3, max_tokens=2000)
    ds = IndexedDataset(prefix)
    stream = np.concatenate([np.asarray(ds[i], dtype=np.int64) for i in range(len(ds))])[:2000]
    n = (len(stream) - 1) // 64
    x = torch.from_numpy(np.stack([stream[j * 64 : j * 64 + 65] for j in range(n)]))
    with torch.no_grad():
        ref = scorer.model(input_ids=x[:, :-1], labels=x[:, :-1]).loss  # HF shifts labels itself
        # HF's loss covers positions 1..63 of each window; add the window's last target ourselves.
        last = torch.nn.functional.cross_entropy(scorer.model(input_ids=x[:, :-1]).logits[:, -1], x[:, -1])
    expected = (ref * 63 + last) / 64
    assert got["tokens"] == n * 64 and got["windows"] == n
    assert got["loss"] == pytest.approx(float(expected), abs=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(got["loss"]))
    assert evaluate_prefix(scorer, [prefix], seq_len=64, batch_size=8, max_tokens=2000)["loss"] == pytest.approx(
        got["loss"], abs=1e-6
    )


def test_eval_cli_json_and_bad_prefix(lm, prefix, tmp_path, capsys):
    from launch.cli import main

    _, folder, _ = lm
    out = tmp_path / "e.json"
    assert (
        main(["eval", "--checkpoint", str(folder), "--data", prefix, "--max-tokens", "1000", "--output", str(out)]) == 0
    )
    result = json.loads(out.read_text())
    assert {"loss", "perplexity", "tokens", "windows", "seq_len"} <= set(result)
    # per domain (NAME=PREFIX or PREFIX): each as if alone, the total weighted by tokens
    assert main(["eval", "--checkpoint", str(folder), "--data", f"a={prefix}", prefix, "--max-tokens", "1000",
                 "--output", str(out)]) == 0  # fmt: skip
    two = json.loads(out.read_text())
    assert set(two["domains"]) == {"a", "s"} and two["domains"]["a"] == two["domains"]["s"]
    assert two["domains"]["a"]["loss"] == pytest.approx(result["loss"], abs=1e-9)
    assert two["tokens"] == 2 * result["tokens"] and two["loss"] == pytest.approx(result["loss"], abs=1e-9)
    with pytest.raises(SystemExit, match="domain name 'a' given twice"):
        main(["eval", "--checkpoint", str(folder), "--data", f"a={prefix}", f"a={prefix}"])
    with pytest.raises(SystemExit, match="nothing to evaluate"):
        main(["eval", "--checkpoint", str(folder)])
    assert main(["eval", "--checkpoint", str(folder), "--data", str(tmp_path / "nope")]) == 2
    assert "nope.bin: missing" in capsys.readouterr().err


def test_document_scores_independent_of_batching(lm):
    _, _, scorer = lm
    texts = [d.text for d in iter_sample_documents(12)] + ["x", "short text"]
    one = score_texts(scorer, texts, batch_size=1, max_tokens=300)
    many = score_texts(scorer, texts, batch_size=5, max_tokens=300)
    for a, b in zip(one, many):
        assert a["tokens"] == b["tokens"] and a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    # A document that fits one window: transformers' loss over [eos] + tokens.
    ids = [scorer.eos_id] + scorer.encode(texts[-1])
    with torch.no_grad():
        ref = scorer.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
    assert one[-1]["loss"] == pytest.approx(float(ref), abs=1e-5)


def _run_stage(params: dict, shards: list[list[Document]], workdir):
    from data_pipeline.steps.base import build_step

    stage = build_step("perplexity", params)
    for k, docs in enumerate(shards):
        stage.scan(iter(docs), k, workdir)
    stage.reduce(len(shards), workdir)
    kept, stats = [], []
    for k, docs in enumerate(shards):
        s = build_step("perplexity", params)
        s.prepare(k, workdir)
        kept += list(s.run(docs))
        stats.append(s.stats)
    return kept, stats


def test_perplexity_step_buckets_and_threshold(lm, tmp_path):
    _, folder, scorer = lm
    docs = [Document(id=d.id, text=d.text) for d in iter_sample_documents(30)]
    shards = [docs[:17], docs[17:]]
    (tmp_path / "a").mkdir()
    kept, stats = _run_stage(
        {"model": str(folder), "keep": ["head", "middle"], "batch_size": 4, "max_tokens": 128}, shards, tmp_path / "a"
    )
    ppl = {d.id: r["perplexity"] for d, r in zip(docs, score_texts(scorer, [d.text for d in docs], 8, 128))}
    cut = np.percentile(list(ppl.values()), 200 / 3)
    assert {d.id for d in kept} == {i for i, p in ppl.items() if p <= cut}
    assert all(d.metadata["perplexity"] == pytest.approx(ppl[d.id], rel=1e-4) for d in kept)
    assert sum(s.dropped["perplexity_tail"] for s in stats) == 30 - len(kept) == 10
    (tmp_path / "b").mkdir()
    median = float(np.median(list(ppl.values())))
    kept, stats = _run_stage(
        {"model": str(folder), "mode": "threshold", "max_perplexity": median, "max_tokens": 128}, [docs], tmp_path / "b"
    )
    assert len(kept) == 15 and stats[0].dropped["perplexity_above_max"] == 15


def test_perplexity_step_bad_params_name_the_key(lm):
    from data_pipeline.steps.base import build_step
    from framework.configtree import ConfigError

    _, folder, _ = lm
    with pytest.raises(ConfigError, match="perplexity.keep"):
        build_step("perplexity", {"model": str(folder), "keep": ["top"]})
    with pytest.raises(ConfigError, match="perplexity.model"):
        build_step("perplexity", {"model": "/no/such/model"})
    with pytest.raises(ConfigError, match="max_perplexity"):
        build_step("perplexity", {"model": str(folder), "mode": "threshold"})
