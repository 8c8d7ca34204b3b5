"""Benchmark: the second curation layer (url_filter, decontaminate, sentence_dedup, paragraph_dedup)
vs DataTrove 0.10's URLFilter, n-gram decontamination and sentence dedup, same input, same run.

    .venv/bin/python benchmarks/curation_steps.py [--docs 2000] [--repeats 3]

Input: the documentation pages of benchmarks/curation.py (Python, Django and PostgreSQL manuals from
benchmarks/install_real_inputs.sh, extracted once with `extract`, cached in benchmarks/.cache/).
* URLs: the absolute links found in those same HTML pages (real URLs), one per document, every
  tenth replaced by a page on a block-listed domain or its `www.` subdomain; both tools read DataTrove's own integrated
  lists (its UT1-derived `domains`/`urls` files and banned, soft-banned and sub-word lists).
  Loading the lists is not timed (reported apart).
* Decontamination: an evaluation set of 600 question/answer pairs: 300 from the corpus itself
  (a sentence and the next one: a reading-comprehension benchmark built from these manuals, so
  contamination is real) and 300 from the project's sample corpus (other text). 13-grams over
  question + answer for both (DataTrove: find_query_ngrams and find_overlap_ngrams). Index
  building is timed apart; the per-document filtering is the comparison.
* Sentence dedup: 3-sentence spans, min 50 words, all three phases (signatures/scan, find/reduce,
  filter/apply) on the documents plus 200 documents stitched from halves of others.
Speeds are documents per CPU-second (`time.process_time` of the process doing the work); DataTrove
runs in benchmarks/.venv-peers (created on first use as in curation.py, plus tldextract, fasteners and
pyahocorasick for its URLFilter, tokenizers for its dedup package and xxhash<4, whose str hashing it
relies on), never in Anvil's env.
Results are written to benchmarks/results/curation_steps.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# benchmarks/ itself must not be on the path: benchmarks/tokenize.py would shadow the stdlib module
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

PEER_SCRIPT = r'''
import json, sys, tempfile, time
from pathlib import Path
from datatrove.data import Document
from datatrove.utils._import_utils import ASSETS_PATH
work = json.load(open(sys.argv[1]))
repeats = int(sys.argv[2])
out = {}

def median(xs):
    return sorted(xs)[len(xs) // 2]

# --- URL filter -------------------------------------------------------------------------------
from tldextract import TLDExtract
from datatrove.pipeline.filters import URLFilter
t = time.process_time()
uf = URLFilter()
uf.tldextractor = TLDExtract(suffix_list_urls=())     # bundled suffix list: no network
uf.download_data()
load = time.process_time() - t
docs = [Document(text="", id=str(i), metadata={"url": u}) for i, u in enumerate(work["urls"])]
uf.filter(Document(text="", id="w", metadata={"url": "https://warm.up.example.com/x"}))   # lazy set-up outside
runs = []
for _ in range(repeats):
    t = time.process_time()
    kept = [uf.filter(d) is True for d in docs]
    runs.append(time.process_time() - t)
out["url_filter"] = {"seconds": median(runs), "load_seconds": load, "kept": kept}

# --- n-gram decontamination -------------------------------------------------------------------
from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter, NGramsDecontIndexer
from datatrove.utils.hashing import create_hash_func
from datatrove.utils.typeshelper import Languages
from datatrove.utils.word_tokenizers import load_word_tokenizer
import numpy as np
cfg = NGramsDecontConfig(n_grams=13, find_query_ngrams=True, find_overlap_ngrams=True)
index_dir = Path(tempfile.mkdtemp())
class _Indexer:   # NGramsDecontIndexer.compute_hashes without its lighteval dependency
    config, tokenizer, hash_func = cfg, load_word_tokenizer(Languages.english), create_hash_func(cfg.hash_config)
t = time.process_time()
hashes = set()
for ex in work["eval"]:
    hashes.update(NGramsDecontIndexer.compute_hashes(_Indexer, ex["answer"], ex["question"]))
np.array(sorted(hashes), dtype=cfg.hash_config.np_descr).tofile(index_dir / "bench.index.hashes")
index_seconds = time.process_time() - t
texts = work["texts"]
runs = []
for _ in range(repeats):
    f = NGramsDecontFilter(str(index_dir), config=cfg)
    f.filter(Document(text="warm up the tokenizer", id="w"))
    docs = [Document(text=x, id=str(i)) for i, x in enumerate(texts)]
    t = time.process_time()
    kept = [f.filter(d) is True for d in docs]
    runs.append(time.process_time() - t)
out["decontaminate"] = {"seconds": median(runs), "index_seconds": index_seconds, "kept": kept}

# --- sentence dedup ---------------------------------------------------------------------------
from datatrove.pipeline.dedup.sentence_dedup import (SentDedupConfig, SentenceDedupFilter, SentenceDedupSignature,
                                                     SentenceFindDedups)
sd = SentDedupConfig(n_sentences=3, min_doc_words=50)
texts = work["dedup_texts"]
runs = []
for _ in range(repeats):
    tmp = Path(tempfile.mkdtemp())
    docs = [Document(text=x, id=str(i)) for i, x in enumerate(texts)]
    t = time.process_time()
    SentenceDedupSignature(str(tmp / "sigs"), config=sd).run(iter(docs), rank=0, world_size=1)
    SentenceFindDedups(str(tmp / "sigs"), str(tmp / "dups"), config=sd).run(rank=0, world_size=1)
    kept = {d.id: d.text for d in SentenceDedupFilter(str(tmp / "dups"), config=sd).run(iter(docs), rank=0, world_size=1)}
    runs.append(time.process_time() - t)
out["sentence_dedup"] = {"seconds": median(runs), "kept": [str(i) in kept for i in range(len(texts))],
                         "chars_out": sum(len(v) for v in kept.values())}
print(json.dumps(out))
'''


def _curation_module():
    spec = importlib.util.spec_from_file_location("anvil_bench_curation", HERE / "curation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def real_urls(html_roots: list[str], limit: int = 20000) -> list[str]:
    """Absolute http(s) links from the installed HTML manuals, deduplicated, in file order."""
    seen, out = set(), []
    href = re.compile(r'href="(https?://[^"#\s]+)"')
    for root in html_roots:
        for page in sorted(Path(root).rglob("*.html")) if Path(root).is_dir() else []:
            for url in href.findall(page.read_text(errors="replace")):
                if url not in seen:
                    seen.add(url)
                    out.append(url)
                    if len(out) >= limit:
                        return out
    return out


def make_work(texts: list[str], html_roots: list[str], peers_python: Path) -> dict:
    rng = random.Random(0)
    urls = real_urls(html_roots)
    probe = "from datatrove.utils._import_utils import ASSETS_PATH; print(ASSETS_PATH)"
    assets = Path(
        subprocess.run(
            [str(peers_python), "-c", probe], capture_output=True, text=True, cwd="/", check=True
        ).stdout.strip()
    )
    lists = HERE / ".cache" / "datatrove-url-lists"
    if not (lists / "domains").exists():
        lists.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "xzf", str(assets / "url_filterblacklistsv0_3_0.tar.gz"), "-C", str(lists)], check=True)
    with open(lists / "domains") as fh:
        blocked = [line.strip() for _, line in zip(range(5000), fh) if line.strip()]
    doc_urls = []
    for i in range(len(texts)):
        if i % 10 == 9:  # a listed domain itself, or a subdomain of it (DataTrove: fqdn / registered domain)
            doc_urls.append(f"https://{'www.' if i % 20 == 19 else ''}{rng.choice(blocked)}/page/{i}.html")
        else:
            doc_urls.append(urls[i % len(urls)])
    from data_pipeline.sample import iter_sample_documents
    from data_pipeline.steps.span_dedup import split_sentences

    def pairs(source: list[str], n: int) -> list[dict]:
        out = []
        for text in source:
            sents = [s.strip() for s in split_sentences(text) if 12 <= len(s.split()) <= 60]
            if len(sents) >= 2:
                k = rng.randrange(len(sents) - 1)
                out.append({"question": sents[k], "answer": sents[k + 1]})
            if len(out) >= n:
                break
        return out

    shuffled = texts[:]
    rng.shuffle(shuffled)
    evalset = pairs(shuffled, 300) + pairs([d.text for d in iter_sample_documents(2000)], 300)
    stitched = []
    for _ in range(200):
        a, b = rng.sample(texts, 2)
        stitched.append(a[: len(a) // 2] + "\n" + b[len(b) // 2 :])
    return {
        "urls": doc_urls,
        "lists": str(lists),
        "assets": str(assets),
        "eval": evalset,
        "texts": texts,
        "dedup_texts": texts + stitched,
    }


def _median(xs):
    return sorted(xs)[len(xs) // 2]


def run_anvil(work: dict, repeats: int, tmp: Path) -> dict:
    from data_pipeline.document import Document
    from data_pipeline.steps.base import build_step

    out = {}
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
    docs = [Document(str(i), "", {"url": u}) for i, u in enumerate(work["urls"])]
    uf.keep(Document("w", "", {"url": "https://warm.up.example.com/x"}))
    runs = []
    for _ in range(repeats):
        t = time.process_time()
        kept = [uf.keep(d)[0] for d in docs]
        runs.append(time.process_time() - t)
    out["url_filter"] = {"seconds": _median(runs), "load_seconds": load, "kept": kept}

    evalfile = tmp / "bench.jsonl"
    evalfile.write_text("".join(json.dumps(e) + "\n" for e in work["eval"]))
    dparams = {"eval_files": [str(evalfile)], "fields": ["question", "answer"], "ngram": 13}
    t = time.process_time()
    build_step("decontaminate", dparams).reduce(1, tmp)
    index_seconds = time.process_time() - t
    runs = []
    for _ in range(repeats):
        step = build_step("decontaminate", dparams)
        step.prepare(0, tmp)
        docs = [Document(str(i), x) for i, x in enumerate(work["texts"])]
        t = time.process_time()
        kept_ids = {d.id for d in step.run(docs)}
        runs.append(time.process_time() - t)
    out["decontaminate"] = {
        "seconds": _median(runs),
        "index_seconds": index_seconds,
        "kept": [str(i) in kept_ids for i in range(len(work["texts"]))],
    }

    for name in ("sentence_dedup", "paragraph_dedup"):
        runs = []
        for r in range(repeats):
            wd = tmp / f"{name}-{r}"
            wd.mkdir()
            texts = work["dedup_texts"]
            t = time.process_time()
            build_step(name, {}).scan(iter([Document(str(i), x) for i, x in enumerate(texts)]), 0, wd)
            build_step(name, {}).reduce(1, wd)
            step = build_step(name, {})
            step.prepare(0, wd)
            kept = {d.id: d.text for d in step.run([Document(str(i), x) for i, x in enumerate(texts)])}
            runs.append(time.process_time() - t)
        out[name] = {
            "seconds": _median(runs),
            "kept": [str(i) in kept for i in range(len(texts))],
            "chars_out": sum(len(v) for v in kept.values()),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3, help="median of this many runs")
    args = ap.parse_args()
    curation = _curation_module()
    path = curation.build_input(args.docs)
    with open(path) as fh:
        texts = [json.loads(line)["text"] for line in fh]
    peers = curation.ensure_peers()
    probe = "import tldextract, fasteners, ahocorasick, tokenizers, xxhash; xxhash.xxh64_intdigest('str')"
    if subprocess.run([str(peers), "-c", probe], cwd="/", capture_output=True, check=False).returncode:
        # extras of DataTrove's URLFilter and dedup package (its own env, never Anvil's); its n-gram
        # and sentence hashing passes str to xxhash, which xxhash 4 refuses
        subprocess.run(
            [
                str(peers),
                "-m",
                "pip",
                "install",
                "-q",
                "tldextract",
                "fasteners",
                "pyahocorasick",
                "tokenizers",
                "xxhash<4",
            ],
            check=True,
        )
    work = make_work(texts, curation.HTML_ROOTS, peers)
    print(
        f"input: {len(texts)} documents ({sum(map(len, texts)) / 1e6:.1f} M chars), {len(work['urls'])} URLs, "
        f"{len(work['eval'])} evaluation examples, {len(work['dedup_texts'])} documents for sentence dedup"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work_file = Path(tmp) / "work.json"
        work_file.write_text(json.dumps(work))
        peer = subprocess.run(
            [str(peers), "-c", PEER_SCRIPT, str(work_file), str(args.repeats)],
            capture_output=True,
            text=True,
            cwd="/",
            check=False,
        )
        if peer.returncode != 0:
            raise SystemExit(f"benchmarks/curation_steps.py: DataTrove run failed:\n{peer.stderr[-3000:]}")
        dt = json.loads(peer.stdout.strip().splitlines()[-1])
        anvil = run_anvil(work, args.repeats, Path(tmp))
    from framework.runtime import print_table

    rows, results = [], {"docs": len(texts), "repeats": args.repeats, "steps": {}}
    for name in ("url_filter", "decontaminate", "sentence_dedup", "paragraph_dedup"):
        a = anvil[name]
        n = len(a["kept"])
        row = {"step": name, "docs": n, "anvil docs/CPU-s": round(n / a["seconds"]), "anvil kept": sum(a["kept"])}
        res = {"docs": n, "anvil_seconds": round(a["seconds"], 4), "anvil_kept": sum(a["kept"])}
        if name in dt:
            d = dt[name]
            agree = sum(x == y for x, y in zip(a["kept"], d["kept"])) / n
            row.update(
                {
                    "datatrove docs/CPU-s": round(n / d["seconds"]),
                    "speed-up": f"{d['seconds'] / a['seconds']:.1f}x",
                    "datatrove kept": sum(d["kept"]),
                    "agree": f"{agree:.1%}",
                }
            )
            res.update(
                {
                    "datatrove_seconds": round(d["seconds"], 4),
                    "datatrove_kept": sum(d["kept"]),
                    "speedup": round(d["seconds"] / a["seconds"], 2),
                    "agreement": round(agree, 4),
                }
            )
            for extra in ("load_seconds", "index_seconds", "chars_out"):
                if extra in d:
                    res[f"anvil_{extra}"], res[f"datatrove_{extra}"] = round(a[extra], 3), round(d[extra], 3)
        elif "chars_out" in a:
            res["anvil_chars_out"] = a["chars_out"]
        rows.append(row)
        results["steps"][name] = res
    print_table(
        rows,
        title=f"second curation layer, 1 process, per CPU-second, median of {args.repeats} (target: each >= DataTrove)",
    )
    for name in ("url_filter", "decontaminate"):
        r = results["steps"][name]
        key = "load_seconds" if name == "url_filter" else "index_seconds"
        print(
            f"{name}: {key.split('_')[0]} (not in the table) anvil {r['anvil_' + key]:.2f} s, "
            f"DataTrove {r['datatrove_' + key]:.2f} s"
        )
    out = HERE / "results" / "curation_steps.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
