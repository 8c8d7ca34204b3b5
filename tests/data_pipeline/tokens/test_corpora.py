"""The data side of `anvil ladder`: one held-out set drawn by id from the union and removed from
every corpus, one tokenizer, one prefix per corpus; reruns skip finished stages, changed inputs are refused."""

import json

import pytest

from data_pipeline.tokens.corpora import CorpusError, _union_texts, prepare_corpora

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def _doc(i: int, variant: str = "") -> dict:
    words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(40)]
    return {"id": f"doc{i}", "text": f"document {i} {variant} " + " ".join(words)}


def _write(path, docs, extra_lines=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in docs) + "".join(extra_lines))


@pytest.fixture()
def corpora(tmp_path):
    # a and b share ids 0..59 (b's texts differ: another recipe of the same pages); b also holds
    # doc0's exact text under a new id, and a has a line that cannot be read
    a = [_doc(i) for i in range(80)]
    b = [_doc(i, "v2") for i in range(60)] + [{"id": "copy-of-doc0", "text": _doc(0)["text"]}]
    _write(tmp_path / "a" / "part.jsonl", a, ["{not json\n"])
    _write(tmp_path / "b.jsonl", b)
    return {"a": str(tmp_path / "a"), "b": str(tmp_path / "b.jsonl")}


def _ids(prefix_docs_path):
    return {json.loads(line)["id"] for line in open(prefix_docs_path)}


def test_heldout_ids_leave_every_corpus_and_reruns_skip_every_stage(tmp_path, corpora):
    out = tmp_path / "data"
    prep = prepare_corpora(corpora, out, vocab_size=384, heldout_fraction=0.2, seed=3)
    split = json.loads((out / "split.json").read_text())
    held_ids = set(split["ids"])
    assert 5 < len(held_ids) < 40
    heldout = [json.loads(line) for line in open(out / "heldout.jsonl")]
    assert {d["id"] for d in heldout} <= held_ids
    # the union: a held-out id shared by both corpora contributes both of its texts
    shared = sorted(i for i in held_ids if int(i[3:]) < 60)
    assert shared and len(heldout) == len(held_ids) + len(shared)
    # every corpus trains on the rest: documents read minus held-out ids (and held-out texts)
    assert prep.documents["a"] == {"read": 80, "train": 80 - len(held_ids), "heldout": len(held_ids), "rejected": 1}
    copy_out = 1 if "doc0" in held_ids else 0  # doc0's text under another id goes with it
    assert prep.documents["b"]["train"] == 61 - len(shared) - copy_out
    assert prep.heldout_documents == len(heldout) and prep.heldout_tokens > 0
    assert (out / "rejected" / "a.jsonl").read_text().count('"invalid_json"') == 1
    assert set(prep.prefixes) == {"a", "b"} and prep.vocab_size == 384

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "prepared.json"}
    again = prepare_corpora(corpora, out, vocab_size=384, heldout_fraction=0.2, seed=3)
    assert again == prep
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing rewritten

    # another yardstick (a's held-out texts only): scored text changes, training data does not
    trained = {p: m for p, m in mtimes.items() if p.parent.name == "tokens" and p.stem != "heldout"}
    ref = prepare_corpora(corpora, out, vocab_size=384, heldout_fraction=0.2, seed=3, heldout_from=["a"])
    assert {p: p.stat().st_mtime_ns for p in trained} == trained
    only_a = [json.loads(line) for line in open(out / "heldout.jsonl")]
    assert len(only_a) == len(held_ids) and all("a" in d["corpora"] for d in only_a)
    assert ref.heldout_documents == len(held_ids) and ref.tokens == prep.tokens
    with pytest.raises(CorpusError, match="heldout_from"):
        prepare_corpora(corpora, out, vocab_size=384, heldout_fraction=0.2, seed=3, heldout_from=["zz"])

    with pytest.raises(CorpusError, match="heldout_fraction changed"):
        prepare_corpora(corpora, out, vocab_size=384, heldout_fraction=0.3, seed=3)
    _write(tmp_path / "b.jsonl", [_doc(1)])
    with pytest.raises(CorpusError, match="corpora.b changed"):
        prepare_corpora(corpora, out, vocab_size=384, heldout_fraction=0.2, seed=3)


def test_the_draw_depends_on_id_and_seed_only(tmp_path, corpora):
    from data_pipeline.tokens.corpora import _split

    one, _ = _split(corpora, 0.2, 3, tmp_path / "one")
    two, _ = _split(dict(reversed(list(corpora.items()))), 0.2, 3, tmp_path / "two")
    other, _ = _split(corpora, 0.2, 4, tmp_path / "three")
    assert one.ids == two.ids and one.texts == two.texts
    candidates = "heldout_candidates.jsonl"
    assert (tmp_path / "one" / candidates).read_bytes() == (tmp_path / "two" / candidates).read_bytes()
    assert other.ids != one.ids


def test_a_capped_tokenizer_sample_takes_each_corpus_in_turn(tmp_path, corpora):
    from data_pipeline.tokens.corpora import _Split

    texts = list(_union_texts(corpora, _Split(set(), set()), limit=6))
    assert len(texts) == 6
    assert [t.split()[2] == "v2" for t in texts] == [False, True] * 3  # a, b, a, b, ...
    assert len(list(_union_texts(corpora, _Split(set(), set())))) == 80 + 60  # b's copy of doc0 counted once


def test_an_unreadable_corpus_is_an_error_naming_it(tmp_path, corpora):
    (tmp_path / "empty.jsonl").write_text("{broken\n")
    with pytest.raises(CorpusError, match="corpora.c': no readable documents"):
        prepare_corpora(corpora | {"c": str(tmp_path / "empty.jsonl")}, tmp_path / "d", vocab_size=384)
    with pytest.raises(CorpusError, match="corpora.d': input not found"):
        prepare_corpora(corpora | {"d": str(tmp_path / "nope")}, tmp_path / "e", vocab_size=384)
