"""HTML to text with trafilatura (precision-oriented settings, a timeout per page, a size cap).

Only documents whose `metadata["content_type"]` is HTML (WARC responses, .html files read with
`raw_html=True`) are extracted; documents that are already text pass through untouched. The timeout
uses SIGALRM, so it applies in the main thread of a process (every executor task runs there);
elsewhere pages run without it.
"""
from __future__ import annotations

import signal
import threading
from dataclasses import dataclass

from data_pipeline.document import Document
from data_pipeline.steps.base import Step, register

HTML_TYPES = ("text/html", "application/xhtml+xml")


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


@register("extract")
class Extract(Step):
    @dataclass
    class Params:
        timeout_s: float = 5.0           # per page; 0 disables
        max_html_chars: int = 2_000_000   # larger pages are cut to this before parsing
        favor_precision: bool = True
        include_comments: bool = False
        include_tables: bool = False
        fast: bool = True                 # no fallback extractors (justext/readability)
        deduplicate: bool = True          # trafilatura's in-page repeated-segment removal

    def __init__(self, params=None):
        super().__init__(params)
        import trafilatura

        self._extract = trafilatura.extract

    def extract_text(self, doc: Document) -> tuple[str | None, str | None]:
        """(text, None) or (None, reason)."""
        p = self.params
        html = doc.text
        if len(html) > p.max_html_chars:
            html = html[: p.max_html_chars]
            self.stats.edits["html_truncated"] += 1
        use_alarm = p.timeout_s > 0 and threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
        try:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, p.timeout_s)
            text = self._extract(html, url=doc.metadata.get("url") or None, fast=p.fast,
                                 favor_precision=p.favor_precision, include_comments=p.include_comments,
                                 include_tables=p.include_tables, deduplicate=p.deduplicate)
        except _Timeout:
            return None, "timeout"
        except Exception:  # noqa: BLE001 - lxml/trafilatura fail in many ways on hostile HTML
            return None, "extract_error"
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old)
        if not text or not text.strip():
            return None, "no_text"
        return text, None

    def process(self, doc: Document):
        if doc.metadata.get("content_type") not in HTML_TYPES:
            return None
        text, reason = self.extract_text(doc)
        if text is None:
            return reason
        doc.text = text
        del doc.metadata["content_type"]
        return None
