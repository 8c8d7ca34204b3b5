"""URL filtering, FineWeb's first step (DataTrove's URLFilter): block lists of domains, full URLs
and banned words, read from local files, with an allow list that wins.

Lists are files with one entry per line (`#` starts a comment) or UT1-style folders (one folder
per category holding `domains` and/or `urls` files, as in the Université Toulouse 1 blacklists);
each list is named after its file stem or category folder, and rejections say which list
matched: `url_domain_{list}`, `url_url_{list}`, `url_word_{list}`, `url_soft_{list}`,
`url_subword_{list}`.

* A domain entry matches the URL's host itself or any parent domain (`example.com` blocks
  `www.example.com` and `a.b.example.com`, never `notexample.com`), case-insensitively. Walking
  the host's parents covers the registrable domain (what DataTrove asks tldextract for) without a
  suffix list.
* A URL entry matches the URL without scheme, `www.`, fragment and trailing `/`, case-insensitively.
* `banned_words` match whole words of the lowercased URL split on non-alphanumerics (`/xxx-videos`
  has the word `xxx`, `/sussex` does not); `soft_banned_words` only when at least
  `soft_word_threshold` (2) different ones occur; `banned_subwords` match anywhere in the URL with
  its non-alphanumerics removed (DataTrove's banned sub-words, for words hiding inside others, e.g.
  `porn` in `freeporn`), through one regular expression shaped as a trie (one pass over the URL).
* `allow_domains`: a URL whose host (or a parent) is listed passes whatever else matched.

A document without a `url` (metadata of WARC records; a `url` field of JSONL) passes. With no
parameters the small lists shipped in configs/data/url_blocklist/ are used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from data_pipeline.document import Document
from data_pipeline.steps.base import Filter, register
from framework.configtree import ConfigError

DEFAULT_LISTS = Path(__file__).resolve().parents[2] / "configs" / "data" / "url_blocklist"
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _entries(path: Path) -> list[str]:
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip().lower()
            if line:
                out.append(line)
    return out


def read_lists(paths: list[str], kind: str) -> list[tuple[str, list[str]]]:
    """(list name, entries) for each file, or each UT1 category (`kind`: domains | urls) of a folder."""
    lists = []
    for p in map(Path, paths):
        if p.is_file():
            lists.append((p.stem, _entries(p)))
            continue
        found = sorted(p.glob(kind)) + sorted(p.glob(f"*/{kind}"))
        lists += [(f.parent.name, _entries(f)) for f in found if f.is_file()]
    return lists


def _domain(entry: str) -> str:
    entry = entry.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    return entry.lstrip("*.").rstrip(".")


def url_key(url: str) -> str:
    url = url.strip().lower().split("#", 1)[0]
    url = url.split("://", 1)[-1]
    url = url.removeprefix("www.")
    return url.rstrip("/")


def parent_domains(host: str):
    labels = host.split(".")
    for i in range(len(labels)):
        yield ".".join(labels[i:])


@register("url_filter")
class UrlFilter(Filter):
    @dataclass
    class Params:
        block_domains: list[str] = field(  # files / UT1 folders of domains to block (and subdomains)
            default_factory=lambda: [str(DEFAULT_LISTS)]
        )
        block_urls: list[str] = field(  # files / UT1 folders of full URLs to block
            default_factory=lambda: [str(DEFAULT_LISTS)]
        )
        banned_words: list[str] = field(  # word lists: drop if a whole word of the URL is listed
            default_factory=lambda: [str(DEFAULT_LISTS / "banned_words.txt")]
        )
        banned_subwords: list[str] = field(default_factory=list)  # word lists: drop if one occurs anywhere in the URL
        soft_banned_words: list[str] = field(default_factory=list)  # word lists: drop if enough distinct ones occur
        soft_word_threshold: int = 2  # distinct soft-banned words needed to drop
        allow_domains: list[str] = field(default_factory=list)  # files / UT1 folders of domains that always pass

        def validate(self) -> None:
            if self.soft_word_threshold < 1:
                raise ConfigError(
                    f"config key 'url_filter.soft_word_threshold': expected >= 1, got {self.soft_word_threshold}"
                )
            for key in (
                "block_domains",
                "block_urls",
                "banned_words",
                "banned_subwords",
                "soft_banned_words",
                "allow_domains",
            ):
                for i, p in enumerate(getattr(self, key)):
                    path = Path(p)
                    if path.is_dir() and key in ("block_domains", "block_urls", "allow_domains"):
                        continue
                    if not path.is_file():
                        what = "file or UT1-style folder" if "domains" in key or "urls" in key else "file"
                        raise ConfigError(f"config key 'url_filter.{key}[{i}]': {what} not found: {p}")

    def __init__(self, params=None):
        super().__init__(params)
        p = self.params
        self._allow = {_domain(e) for _, entries in read_lists(p.allow_domains, "domains") for e in entries}
        self._domains: dict[str, str] = {}
        for name, entries in read_lists(p.block_domains, "domains"):
            for e in entries:
                self._domains.setdefault(_domain(e), name)
        self._urls: dict[str, str] = {}
        for name, entries in read_lists(p.block_urls, "urls"):
            for e in entries:
                self._urls.setdefault(url_key(e), name)
        self._words = _word_lists(p.banned_words)
        self._soft = _word_lists(p.soft_banned_words)
        self._subwords = []
        for f in p.banned_subwords:
            words = {_NON_ALNUM.sub("", e) for e in _entries(Path(f))} - {""}
            if words:
                self._subwords.append((Path(f).stem, re.compile(trie_regex(sorted(words)))))

    def keep(self, doc: Document):
        url = doc.metadata.get("url")
        if not url or not isinstance(url, str):
            return True, None
        try:
            host = (urlsplit(url.strip()).hostname or "").rstrip(".")
        except ValueError:  # e.g. a malformed IPv6 literal: no host to match, words still apply
            host = ""
        parents = list(parent_domains(host)) if host else []
        if self._allow and any(d in self._allow for d in parents):
            return True, None
        for d in parents:
            name = self._domains.get(d)
            if name is not None:
                return False, f"url_domain_{name}"
        name = self._urls.get(url_key(url))
        if name is not None:
            return False, f"url_url_{name}"
        lowered = url.lower()
        if self._words or self._soft:
            words = _NON_ALNUM.split(lowered)
            for word in words:
                name = self._words.get(word)
                if name is not None:
                    return False, f"url_word_{name}"
            if self._soft:
                soft = sorted({w for w in words if w in self._soft})
                if len(soft) >= self.params.soft_word_threshold:
                    return False, f"url_soft_{self._soft[soft[0]]}"
        if self._subwords:
            squeezed = _NON_ALNUM.sub("", lowered)
            for name, pattern in self._subwords:
                if pattern.search(squeezed):
                    return False, f"url_subword_{name}"
        return True, None


def _word_lists(files: list[str]) -> dict[str, str]:
    """word -> name of the first list holding it."""
    words: dict[str, str] = {}
    for f in files:
        for e in _entries(Path(f)):
            words.setdefault(e, Path(f).stem)
    return words


def trie_regex(words: list[str]) -> str:
    """A regular expression matching any of `words`, nested by common prefixes so that the engine
    follows one branch per character instead of trying every word at every position."""
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        if "" in node:
            return ""  # a word ends here: the shortest match is enough for `search`
        alts = [re.escape(ch) + emit(child) for ch, child in sorted(node.items())]
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return emit(trie)
