"""HTML to text, the engines behind the `extract` step (and the readers' built-in extraction of HTML
files and WARC responses): trafilatura (precision-oriented, FineWeb's choice) or Resiliparse (DCLM's, ~10x faster).

It lives in `io` because readers use it too (imports flow io <- steps, never the other way).

`engine: trafilatura` (default) runs trafilatura with the settings below; `engine: resiliparse`
runs Resiliparse's `extract_plain_text(main_content=True)`, the extractor DCLM used for its
baseline corpus. Both engines share the size cap (`max_html_chars`), the per-page timeout and the
drop reasons: `timeout`, `extract_error` (the parser raised), `no_text` (no letter or digit left). The
trafilatura-only knobs (`favor_precision`, `include_tables`, `fast`, `deduplicate`) do not apply to
Resiliparse; `include_comments` maps to its `comments` (comment sections of a page). README.md
("Choosing the extraction engine") compares what the two keep.

The timeout uses SIGALRM, so it applies in the main thread of a process (every executor task runs
there); elsewhere pages run without it. Like any signal in Python it fires between bytecodes: a
page stuck inside one C call (lxml, Resiliparse) is stopped when that call returns. lxml refuses
deep nesting (lxml stops at its depth limit); for Resiliparse see MAX_NESTING.
"""

from __future__ import annotations

import re
import signal
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

HTML_TYPES = ("text/html", "application/xhtml+xml")
ENGINES = ("trafilatura", "resiliparse")
_WORD = re.compile(r"\w")
# Resiliparse's main-content pass is quadratic in nesting depth (4,000 nested <div>: 1.4 s, 20,000:
# 40 s) and runs in C, where the alarm cannot stop it. Real pages nest < 200 deep; a page that may
# nest deeper than this is extracted without the main-content pass (linear; edit deep_html_full_text).
MAX_NESTING = 2000


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _trafilatura(p) -> Callable[[str, str | None], str | None]:
    import trafilatura
    from trafilatura.deduplication import LRUCache

    def run(html: str, url: str | None) -> str | None:
        return trafilatura.extract(
            html,
            url=url,
            fast=p.fast,
            favor_precision=p.favor_precision,
            include_comments=p.include_comments,
            include_tables=p.include_tables,
            # A fresh cache per page: `deduplicate=True` counts segments in one cache shared by the
            # whole process, so a page's text would depend on the pages read before it (and on
            # --workers). Per page, the removal is what it claims to be: in-page repetition.
            deduplicate=LRUCache(maxsize=4096) if p.deduplicate else False,
        )

    return run


def nesting_bound(html: str) -> int:
    """An upper bound of the page's tag nesting depth (0 when it cannot exceed MAX_NESTING): the
    highest running count of `<` minus `</`. Void elements, comments and `<` in scripts only raise it."""
    if html.count("<") - html.count("</") <= MAX_NESTING:
        return 0
    import numpy as np

    data = np.frombuffer(html.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    lt = np.flatnonzero(data == 60)
    after = data[np.minimum(lt + 1, len(data) - 1)]
    return int(np.cumsum(np.where(after == 47, -1, 1)).max())


def _resiliparse(p, edits: Counter) -> Callable[[str, str | None], str | None]:
    try:
        from resiliparse.extract.html2text import extract_plain_text
    except ImportError as exc:  # pragma: no cover - resiliparse is in install_requires
        from framework.configtree import ConfigError

        raise ConfigError(
            f"config key 'extract.engine': resiliparse is not installed ({exc}); "
            "pip install 'resiliparse>=2.0.1' or use engine: trafilatura"
        ) from None

    def run(html: str, url: str | None) -> str | None:
        main = nesting_bound(html) <= MAX_NESTING
        if not main:
            edits["deep_html_full_text"] += 1
        return extract_plain_text(html, main_content=main, comments=p.include_comments)

    return run


@dataclass
class ExtractSettings:
    """The `extract` step's parameters (its `Params`)."""

    engine: Literal["trafilatura", "resiliparse"] = "trafilatura"  # resiliparse: ~10x faster (DCLM's choice)
    timeout_s: float = 5.0  # per page; 0 disables
    max_html_chars: int = 2_000_000  # larger pages are cut to this before parsing
    favor_precision: bool = True  # trafilatura only
    include_comments: bool = False  # keep comment sections of a page
    include_tables: bool = False  # trafilatura only
    fast: bool = True  # trafilatura only: no fallback extractors (justext/readability)
    deduplicate: bool = True  # trafilatura only: in-page repeated-segment removal


class HtmlExtractor:
    """`extract(html, url) -> (text, None) | (None, reason)` with the size cap and the timeout;
    edits (`html_truncated`, `deep_html_full_text`) are counted into `edits`."""

    def __init__(self, settings: ExtractSettings | None = None, edits: Counter | None = None):
        self.settings = settings if settings is not None else ExtractSettings()
        self.edits = edits if edits is not None else Counter()
        engine = self.settings.engine
        if engine not in ENGINES:  # settings built by hand, not through the recipe's type check
            raise ValueError(f"extract.engine: expected one of {list(ENGINES)}, got {engine!r}")
        self._run = _resiliparse(self.settings, self.edits) if engine == "resiliparse" else _trafilatura(self.settings)

    def extract(self, html: str, url: str | None) -> tuple[str | None, str | None]:
        p = self.settings
        if len(html) > p.max_html_chars:
            html = html[: p.max_html_chars]
            self.edits["html_truncated"] += 1
        use_alarm = p.timeout_s > 0 and threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
        try:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, p.timeout_s)
            text = self._run(html, url or None)
        except _Timeout:
            return None, "timeout"
        except Exception:  # noqa: BLE001 - parsers fail in many ways on hostile HTML
            return None, "extract_error"
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old)
        if not text or not _WORD.search(text):  # nothing, or only whitespace/control characters/punctuation
            return None, "no_text"
        return text, None
