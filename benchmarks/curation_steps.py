"""Benchmark: the second curation layer (url_filter, decontaminate, sentence_dedup, paragraph_dedup)
against DataTrove 0.10's URLFilter, n-gram decontamination and sentence dedup, same input, same run.

    .venv/bin/python -P benchmarks/curation_steps.py [--docs 600] [--repeats 1]

Input: `--docs` documents taken evenly from the corpus of benchmarks/datatrove_compat.py (real
documentation pages: Debian handbook, Python and Django manuals, licences, man pages; extracted once
and cached in the benchmark cache; without the real inputs the project's sample corpus, labelled so).
* URLs: the absolute links found in the installed HTML manuals (real URLs; with the sample corpus,
  the links in its text), one per document, every tenth replaced by a page on a block-listed domain
  or its `www.` subdomain; both tools read DataTrove's own integrated lists (its UT1-derived
  `domains`/`urls` files and banned, soft-banned and sub-word lists). Loading 4.5M domains costs
  seconds while filtering 1,000 URLs costs milliseconds, so this one is reported per CPU-second of
  the filtering, list loading given apart.
* Decontamination: an evaluation set of up to 600 question/answer pairs: half from the corpus itself
  (a sentence and the next one: contamination is real) and half from the sample corpus (other text).
  13-grams over question + answer for both (DataTrove: find_query_ngrams and find_overlap_ngrams).
* Sentence dedup: 3-sentence spans, min 50 words, all three phases (signatures/scan, find/reduce,
  filter/apply) on the documents plus 200 documents stitched from halves of others. DataTrove has no
  paragraph dedup: Anvil's `paragraph_dedup` is measured on the same input, alone.
Each (tool, step) runs in a process of its own, one after the other; decontamination and dedup are
reported as documents per wall-second of that whole process (start-up, imports, reading the input,
index building and every phase included); CPU and wall seconds of the work alone are kept in the
results file. DataTrove runs in benchmarks/.venv-peers (`make bench` creates it from
benchmarks/requirements-peers.txt), never in Anvil's environment: this file re-executes itself there
with `--peer`, which imports nothing of Anvil. Without it, Anvil alone is measured and the rows say
why DataTrove is not. Results: benchmarks/results/curation_steps.json.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# benchmarks/ itself must not be on the path: benchmarks/tokenize.py would shadow the stdlib module
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

STEPS = ("url_filter", "decontaminate", "sentence_dedup", "paragraph_dedup")
PEER_STEPS = ("url_filter", "decontaminate", "sentence_dedup")
DEFAULT_DOCS = 600


# --- DataTrove's side (runs in benchmarks/.venv-peers; imports nothing of Anvil) ------------------


def peer_main(step: str, work_path: str, output_path: str) -> None:
    work = json.loads(Path(work_path).read_text())
    out = {"url_filter": _dt_url_filter, "decontaminate": _dt_decontaminate, "sentence_dedup": _dt_sentence_dedup}[
        step
    ](work)
    Path(output_path).write_text(json.dumps(out))


def _clock() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def _since(start: tuple[float, float]) -> dict:
    return {"cpu_s": time.process_time() - start[0], "wall_s": time.perf_counter() - start[1]}


def _dt_url_filter(work: dict) -> dict:
    from datatrove.data import Document
    from datatrove.pipeline.filters import URLFilter
    from tldextract import TLDExtract

    t = time.process_time()
    uf = URLFilter()
    uf.tldextractor = TLDExtract(suffix_list_urls=())  # its bundled suffix list: no network
    uf.download_data()
    load = time.process_time() - t
    docs = [Document(text="", id=str(i), metadata={"url": u}) for i, u in enumerate(work["urls"])]
    uf.filter(Document(text="", id="w", metadata={"url": "https://warm.up.example.com/x"}))  # lazy set-up
    start = _clock()
    kept = [uf.filter(d) is True for d in docs]
    return {**_since(start), "load_cpu_s": load, "kept": kept}


def _dt_decontaminate(work: dict) -> dict:
    import numpy as np
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter, NGramsDecontIndexer
    from datatrove.utils.hashing import create_hash_func
    from datatrove.utils.typeshelper import Languages
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    cfg = NGramsDecontConfig(n_grams=13, find_query_ngrams=True, find_overlap_ngrams=True)
    index_dir = Path(tempfile.mkdtemp())

    class _Indexer:  # NGramsDecontIndexer.compute_hashes without its lighteval dependency
        config, tokenizer, hash_func = cfg, load_word_tokenizer(Languages.english), create_hash_func(cfg.hash_config)

    start = _clock()
    hashes = set()
    for ex in work["eval"]:
        hashes.update(NGramsDecontIndexer.compute_hashes(_Indexer, ex["answer"], ex["question"]))
    np.array(sorted(hashes), dtype=cfg.hash_config.np_descr).tofile(index_dir / "bench.index.hashes")
    f = NGramsDecontFilter(str(index_dir), config=cfg)
    kept = [f.filter(Document(text=x, id=str(i))) is True for i, x in enumerate(work["texts"])]
    return {**_since(start), "kept": kept}


def _dt_sentence_dedup(work: dict) -> dict:
    from datatrove.data import Document
    from datatrove.pipeline.dedup.sentence_dedup import (
        SentDedupConfig,
        SentenceDedupFilter,
        SentenceDedupSignature,
        SentenceFindDedups,
    )

    sd = SentDedupConfig(n_sentences=3, min_doc_words=50)
    tmp = Path(tempfile.mkdtemp())
    texts = work["dedup_texts"]
    start = _clock()
    SentenceDedupSignature(str(tmp / "sigs"), config=sd).run(
        iter([Document(text=x, id=str(i)) for i, x in enumerate(texts)]), rank=0, world_size=1
    )
    SentenceFindDedups(str(tmp / "sigs"), str(tmp / "dups"), config=sd).run(rank=0, world_size=1)
    docs = [Document(text=x, id=str(i)) for i, x in enumerate(texts)]
    kept = {
        d.id: d.text for d in SentenceDedupFilter(str(tmp / "dups"), config=sd).run(iter(docs), rank=0, world_size=1)
    }
    return {
        **_since(start),
        "kept": [str(i) in kept for i in range(len(texts))],
        "chars_out": sum(len(v) for v in kept.values()),
    }


# --- Anvil's side ---------------------------------------------------------------------------------


def anvil_main(step: str, work_path: str, output_path: str) -> None:
    from data_pipeline.document import Document
    from data_pipeline.steps.base import build_step

    work = json.loads(Path(work_path).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        if step == "url_filter":
            out = _anvil_url_filter(work, build_step, Document)
        elif step == "decontaminate":
            out = _anvil_decontaminate(work, build_step, Document, Path(tmp))
        else:
            out = _anvil_span_dedup(step, work["dedup_texts"], build_step, Document, Path(tmp))
    Path(output_path).write_text(json.dumps(out))


def _anvil_url_filter(work: dict, build_step, document) -> dict:
    lists, assets = Path(work["lists"]), Path(work["assets"])
    params = {
        "block_domains": [str(lists / "domains")],
        "block_urls": [str(lists / "urls")],
        "banned_words": [str(assets / "banned_words.txt")],
        "banned_subwords": [str(assets / "banned_subwords.txt")],
        "soft_banned_words": [str(assets / "soft_banned_words.txt")],
        "soft_word_threshold": 2,
    }
    t = time.process_time()
    uf = build_step("url_filter", params)
    load = time.process_time() - t
    docs = [document(str(i), "", {"url": u}) for i, u in enumerate(work["urls"])]
    uf.keep(document("w", "", {"url": "https://warm.up.example.com/x"}))
    start = _clock()
    kept = [uf.keep(d)[0] for d in docs]
    return {**_since(start), "load_cpu_s": load, "kept": kept}


def _anvil_decontaminate(work: dict, build_step, document, tmp: Path) -> dict:
    evalfile = tmp / "bench.jsonl"
    evalfile.write_text("".join(json.dumps(e) + "\n" for e in work["eval"]))
    params = {"eval_files": [str(evalfile)], "fields": ["question", "answer"], "ngram": 13}
    start = _clock()
    build_step("decontaminate", params).reduce(1, tmp)
    step = build_step("decontaminate", params)
    step.prepare(0, tmp)
    kept_ids = {d.id for d in step.run([document(str(i), x) for i, x in enumerate(work["texts"])])}
    return {**_since(start), "kept": [str(i) in kept_ids for i in range(len(work["texts"]))]}


def _anvil_span_dedup(name: str, texts: list[str], build_step, document, tmp: Path) -> dict:
    start = _clock()
    build_step(name, {}).scan(iter([document(str(i), x) for i, x in enumerate(texts)]), 0, tmp)
    build_step(name, {}).reduce(1, tmp)
    step = build_step(name, {})
    step.prepare(0, tmp)
    kept = {d.id: d.text for d in step.run([document(str(i), x) for i, x in enumerate(texts)])}
    return {
        **_since(start),
        "kept": [str(i) in kept for i in range(len(texts))],
        "chars_out": sum(len(v) for v in kept.values()),
    }


# --- the work both run ----------------------------------------------------------------------------


def real_urls(html_roots: list[Path], limit: int = 20000) -> list[str]:
    """Absolute http(s) links from the installed HTML manuals, deduplicated, in file order."""
    seen: dict[str, None] = {}
    href = re.compile(r'href="(https?://[^"#\s]+)"')
    for root in html_roots:
        for page in sorted(root.rglob("*.html")) if root.is_dir() else []:
            for url in href.findall(page.read_text(errors="replace")):
                seen.setdefault(url)
                if len(seen) >= limit:
                    return list(seen)
    return list(seen)


def text_urls(texts: list[str]) -> list[str]:
    """The http(s) URLs written in the texts themselves (the sample corpus has no HTML)."""
    found = re.compile(r"https?://[^\s<>\"'`)\]]+[^\s<>\"'`)\].,;:]")
    return list(dict.fromkeys(u for t in texts for u in found.findall(t)))


def datatrove_lists(peers: Path, cache: Path) -> tuple[Path, Path]:
    """DataTrove's assets folder and its URL block lists unpacked in the cache (lists, assets)."""
    probe = "from datatrove.utils._import_utils import ASSETS_PATH; print(ASSETS_PATH)"
    done = subprocess.run([str(peers), "-c", probe], capture_output=True, text=True, cwd="/", check=True)
    assets = Path(done.stdout.strip())
    lists = cache / "datatrove-url-lists"
    if not (lists / "domains").exists():
        lists.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "xzf", str(assets / "url_filterblacklistsv0_3_0.tar.gz"), "-C", str(lists)], check=True)
    return lists, assets


def plant_urls(urls: list[str], n: int, blocked_list: Path, rng: random.Random) -> list[str]:
    """`n` URLs: the real ones in turn, every tenth a page on a listed domain or its `www.` subdomain."""
    with open(blocked_list) as fh:
        blocked = [line.strip() for _, line in zip(range(5000), fh) if line.strip()]
    out = []
    for i in range(n):
        if i % 10 == 9:  # a listed domain itself, or a subdomain of it (DataTrove: fqdn / registered domain)
            out.append(f"https://{'www.' if i % 20 == 19 else ''}{rng.choice(blocked)}/page/{i}.html")
        else:
            out.append(urls[i % len(urls)])
    return out


def eval_pairs(source: Iterable[str], n: int, rng: random.Random) -> list[dict]:
    """Up to `n` {question, answer} pairs: a sentence of 12-60 words and the next one."""
    from data_pipeline.steps.span_dedup import split_sentences

    out = []
    for text in source:
        sents = [s.strip() for s in split_sentences(text) if 12 <= len(s.split()) <= 60]
        if len(sents) >= 2:
            k = rng.randrange(len(sents) - 1)
            out.append({"question": sents[k], "answer": sents[k + 1]})
        if len(out) >= n:
            break
    return out


def make_work(texts: list[str], urls: list[str], lists: tuple[Path, Path] | None) -> dict:
    from data_pipeline.sample import iter_sample_documents

    rng = random.Random(0)
    shuffled = texts[:]
    rng.shuffle(shuffled)
    used = set(texts)
    others = (d.text for d in iter_sample_documents(2000) if d.text not in used)  # read only as far as needed
    stitched = []
    for _ in range(200):
        a, b = rng.sample(texts, 2)
        stitched.append(a[: len(a) // 2] + "\n" + b[len(b) // 2 :])
    work = {
        "texts": texts,
        "eval": eval_pairs(shuffled, 300, rng) + eval_pairs(others, 300, rng),
        "dedup_texts": texts + stitched,
    }
    if lists and urls:
        work.update(urls=plant_urls(urls, len(texts), lists[0] / "domains", rng), lists=str(lists[0]))
        work["assets"] = str(lists[1])
    return work


# --- the comparison -------------------------------------------------------------------------------


def measure(work_file: Path, steps: list[str], peers: Path | None, repeats: int, tmp: Path) -> dict:
    """{step: {"anvil": run, "datatrove": run or {"error": why}}}; run = median process of `repeats`."""
    from benchmarks.datatrove_compat import run_child

    out: dict = {}
    for step in steps:
        out[step] = {}
        tools = [("anvil", [sys.executable, "-P", __file__, "--anvil"])]
        if peers and step in PEER_STEPS:
            tools.append(("datatrove", [str(peers), __file__, "--peer"]))
        for tool, cmd in tools:
            try:
                runs = [
                    run_child(
                        [*cmd, step, str(work_file), str(tmp / f"{tool}-{step}-{r}.json")],
                        tmp / f"{tool}-{step}-{r}.json",
                    )
                    for r in range(repeats)
                ]
            except RuntimeError as exc:
                if tool == "anvil":
                    raise
                out[step][tool] = {"error": f"its run failed ({str(exc).splitlines()[-1]})"}
                print(f"DataTrove {step} failed:\n{exc}", flush=True)
                continue
            runs.sort(key=lambda r: r["process_wall_s"])
            out[step][tool] = dict(runs[len(runs) // 2], process_walls_s=[round(r["process_wall_s"], 2) for r in runs])
            print(f"  {tool} {step}: {out[step][tool]['process_wall_s']:.1f} s", flush=True)
    return out


QUANTITY = {
    "url_filter": "URLs per CPU-s of filtering (list loading apart)",
    "decontaminate": "docs per wall-s, whole process (start-up and index included)",
    "sentence_dedup": "docs per wall-s, whole process (start-up and all phases included)",
}
WHAT = {
    "url_filter": "`url_filter`, {n:,} URLs, DataTrove's own lists",
    "decontaminate": "`decontaminate`, 13-grams, {e}-example set, {n:,} docs",
    "sentence_dedup": "`sentence_dedup`, 3-sentence spans, all phases, {n:,} docs",
}
PEER_NAME = {"url_filter": "URLFilter", "decontaminate": "n-gram decont", "sentence_dedup": "SentenceDedup"}


def _rate(step: str, r: dict, n: int) -> tuple[float, str]:
    """(docs per second, formatted): per CPU-s of the filtering for url_filter, else per wall-s of
    the whole process."""
    if step == "url_filter":
        rate = n / r["cpu_s"]
        return rate, f"{rate:,.0f}/s (lists: {r['load_cpu_s']:.1f} CPU s)"
    rate = n / r["process_wall_s"]
    return rate, f"{rate:,.0f}/s"


def step_rows(results: dict, work: dict, url_note: str | None, peer_note: str | None) -> list[dict]:
    """One row per step with a DataTrove peer; `url_note`: why url_filter was not run, `peer_note`:
    why DataTrove was not (None: it was)."""
    from benchmarks.common import row

    rows = []
    for step in PEER_STEPS:
        what = WHAT[step].format(
            n=len(work["dedup_texts" if step == "sentence_dedup" else "texts"]), e=len(work["eval"])
        )
        if step not in results:
            rows.append(row(what, QUANTITY[step], f"not measured: {url_note}"))
            continue
        a = results[step]["anvil"]
        n = len(a["kept"])
        rate, anvil = _rate(step, a, n)
        d = results[step].get("datatrove")
        if d is None or "error" in d:
            rows.append(
                row(what, QUANTITY[step], anvil, peer_note if d is None else f"DataTrove not measured: {d['error']}")
            )
            continue
        peer_rate, peer = _rate(step, d, n)
        agree = sum(x == y for x, y in zip(a["kept"], d["kept"])) / n
        rows.append(
            row(
                f"{what} (keep/drop agreement {agree:.1%})",
                QUANTITY[step],
                anvil,
                f"DataTrove {PEER_NAME[step]}: {peer}",
                f"{rate / peer_rate:.1f}x",
            )
        )
    return rows


def summarize(results: dict) -> dict:
    out = {}
    for step, tools in results.items():
        out[step] = {}
        for tool, r in tools.items():
            if "error" in r:
                out[step][tool] = r
                continue
            s = {k: v if isinstance(v, list) else round(v, 3) for k, v in r.items() if k.endswith("_s")}
            out[step][tool] = {**s, "docs": len(r["kept"]), "kept": sum(r["kept"])}
            if "chars_out" in r:
                out[step][tool]["chars_out"] = r["chars_out"]
        if "datatrove" in tools and "error" not in tools["datatrove"]:
            a, d = tools["anvil"]["kept"], tools["datatrove"]["kept"]
            out[step]["agreement"] = round(sum(x == y for x, y in zip(a, d)) / len(a), 4)
    return out


def main() -> None:
    from benchmarks.common import Recorder
    from benchmarks.datatrove_compat import CACHE, DEFAULT_DOCS as CORPUS_DOCS, HTML_SOURCES, PEERS_MISSING
    from benchmarks.datatrove_compat import load_corpus, peers_python, real_path

    rec = Recorder("curation_steps")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=DEFAULT_DOCS, help=f"documents (default {DEFAULT_DOCS})")
    ap.add_argument("--repeats", type=int, default=1, help="processes per tool and step, median (default 1)")
    args = ap.parse_args()
    if args.docs < 2 or args.repeats < 1:
        ap.error("--docs must be >= 2 and --repeats >= 1")
    path, label, real = load_corpus(max(args.docs, CORPUS_DOCS))
    corpus = [json.loads(line)["text"] for line in open(path, encoding="utf-8")]
    texts = [corpus[i * len(corpus) // args.docs] for i in range(min(args.docs, len(corpus)))]
    label = f"{len(texts)} documents taken evenly from: {label}"
    peers = peers_python()
    urls = real_urls([real_path(r) for r in HTML_SOURCES.values()]) if real else text_urls(corpus)
    lists = datatrove_lists(peers, CACHE) if peers else None
    work = make_work(texts, urls, lists)
    steps = [s for s in STEPS if s != "url_filter" or "urls" in work]
    peer_note = None if peers else PEERS_MISSING
    url_note = None
    if "urls" not in work:
        url_note = (
            "no URLs in the input"
            if peers
            else ("its block lists are DataTrove's own (benchmarks/.venv-peers missing; make bench creates it)")
        )
    print(
        f"input: {label}\n  {len(work.get('urls', []))} URLs ({'real links' if real else 'links in the text'}), "
        f"{len(work['eval'])} evaluation examples, {len(work['dedup_texts'])} documents for span dedup",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        work_file = Path(tmp) / "work.json"
        work_file.write_text(json.dumps(work))
        results = measure(work_file, steps, peers, args.repeats, Path(tmp))
    rows = step_rows(results, work, url_note, peer_note)
    for r in rows:
        print(" | ".join(str(r[k]) for k in ("what", "quantity", "anvil", "peer", "ratio")))
    record = {
        "documents": len(texts),
        "repeats": args.repeats,
        "urls": len(work.get("urls", [])),
        "eval_examples": len(work["eval"]),
        "peer_note": peer_note,
        "url_note": url_note,
        "steps": summarize(results),
    }
    rec.write(record, rows, label)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":  # STEP WORK OUTPUT, in benchmarks/.venv-peers
        peer_main(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "--anvil":  # STEP WORK OUTPUT
        anvil_main(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
