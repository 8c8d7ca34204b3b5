"""fastText in the `classifier` step: `anvil data train-classifier --backend fasttext` trains a small
model on the sample corpus (prose) against standard-library source code, reproducibly; the step
loads the `.bin`, keeps held-out prose and drops held-out code, honours `label` and
`score_field`; bad models and labels fail before any work, naming the YAML key."""

from __future__ import annotations

import inspect
import json as json_mod
import textwrap

import pytest

from data_pipeline.io.readers import iter_documents
from data_pipeline.pipeline import load_recipe, run_recipe
from framework.configtree import ConfigError
from tests.data_pipeline.corpus import real_docs, write_jsonl_gz
from tests.data_pipeline.test_pipeline import JSONL

pytest.importorskip("fasttext")
SMALL = ["--dim", "16", "--n-features", "4096"]  # a 600 kB model; trains in about a second


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fasttext")
    prose = [{"id": f"pos{i}", "text": d.text} for i, d in enumerate(real_docs()[:100])]
    code = [inspect.getsource(m) for m in (json_mod, textwrap, inspect)]
    chunks = [c[i : i + 1500] for c in code for i in range(0, len(c), 1500)][:100]
    source = [{"id": f"neg{i}", "text": t} for i, t in enumerate(chunks)]
    files = {
        name: write_jsonl_gz(root / f"{name}.jsonl.gz", recs)
        for name, recs in (
            ("pos_train", prose[:60]),
            ("neg_train", source[:60]),
            ("pos_test", prose[60:]),
            ("neg_test", source[60:]),
        )
    }
    from launch.cli import main

    model = root / "quality.bin"
    assert (
        main(
            [
                "data",
                "train-classifier",
                "--backend",
                "fasttext",
                "--positive",
                str(files["pos_train"]),
                "--negative",
                str(files["neg_train"]),
                "--output",
                str(model),
                *SMALL,
            ]
        )
        == 0
    )
    return root, files, model


def _run(root, name, files, params: str):
    out = root / name
    stats = run_recipe(
        load_recipe(
            JSONL,
            [f"steps=[{{classifier: {params}}}]", f"input=[{files['pos_test']}, {files['neg_test']}]", f"output={out}"],
        )
    )
    return stats, {d.id: d for d in iter_documents(out)}


def test_trained_model_keeps_prose_drops_code(data, tmp_path, capsys):
    _, files, model = data
    assert model.read_bytes()[:4] == (793712314).to_bytes(4, "little")  # fastText's magic number
    stats, kept = _run(tmp_path, "out", files, f"{{model: {model}, threshold: 0.5}}")
    pos = [i for i in kept if i.startswith("pos")]
    neg = [i for i in kept if i.startswith("neg")]
    assert len(pos) >= 30 and len(neg) <= 4, (len(pos), len(neg))  # documents it never saw
    assert stats["steps"][1]["dropped"] == {"below_threshold": 80 - len(kept)}
    assert all(0.5 <= d.metadata["quality_score"] <= 1 for d in kept.values())
    # The other label is the complement: `label: lq` (short for __label__lq) keeps the code instead.
    stats, flipped = _run(tmp_path, "flip", files, f"{{model: {model}, label: lq, score_field: lq_score}}")
    assert len([i for i in flipped if i.startswith("neg")]) >= 36
    assert len([i for i in flipped if i.startswith("pos")]) <= 10
    assert all("lq_score" in d.metadata and "quality_score" not in d.metadata for d in flipped.values())


def test_training_is_reproducible(data, tmp_path):
    from launch.cli import main

    _, files, model = data
    again = tmp_path / "again.bin"
    assert (
        main(
            [
                "data",
                "train-classifier",
                "--backend",
                "fasttext",
                "--positive",
                str(files["pos_train"]),
                "--negative",
                str(files["neg_train"]),
                "--output",
                str(again),
                *SMALL,
            ]
        )
        == 0
    )
    assert again.read_bytes() == model.read_bytes()


def test_bad_models_and_flags_fail_clearly(data, tmp_path):
    from launch.cli import main

    _, files, model = data
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model at all" * 10)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(model.read_bytes()[:5000])
    cases = [
        (tmp_path / "missing.bin", "classifier.model: file not found"),
        (junk, "classifier.model: .*junk.bin: not a model the classifier can load"),
        (truncated, "classifier.model: .*truncated.bin: cannot load the fastText model"),
    ]
    for path, message in cases:
        with pytest.raises(ConfigError, match=message):
            _run(tmp_path, "x", files, f"{{model: {path}}}")
    with pytest.raises(ConfigError, match=r"classifier.label: '__label__en' is not a label of .*__label__hq"):
        _run(tmp_path, "x", files, f"{{model: {model}, label: __label__en}}")
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit, match="--C does not apply to --backend fasttext"):
        main(
            [
                "data",
                "train-classifier",
                "--backend",
                "fasttext",
                "--positive",
                str(files["pos_train"]),
                "--negative",
                str(files["neg_train"]),
                "--output",
                str(tmp_path / "m.bin"),
                "--C",
                "2",
            ]
        )
    with pytest.raises(SystemExit, match="--epoch does not apply to --backend sklearn"):
        main(
            [
                "data",
                "train-classifier",
                "--positive",
                str(files["pos_train"]),
                "--negative",
                str(files["neg_train"]),
                "--output",
                str(tmp_path / "m.npz"),
                "--epoch",
                "2",
            ]
        )


def test_quantized_model_loads(data, tmp_path):
    """Published models also come quantized (`lid.176.ftz`): the layout check and the step read them."""
    import fasttext

    _, files, model = data
    ftz = tmp_path / "quality.ftz"
    quantized = fasttext.load_model(str(model))
    quantized.quantize(qnorm=True, dsub=2)
    quantized.save_model(str(ftz))
    _, kept = _run(tmp_path, "q", files, f"{{model: {ftz}}}")
    assert len([i for i in kept if i.startswith("pos")]) >= 28
    assert len([i for i in kept if i.startswith("neg")]) <= 6
