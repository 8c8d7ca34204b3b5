"""The `extract` step: HTML documents (WARC responses, .html files read with `raw_html=True`) to
text through `data_pipeline.io.html` (trafilatura by default, or Resiliparse: `engine`); documents
that are already text pass through untouched. Engines, settings and drop reasons (`timeout`,
`extract_error`, `no_text`) are described in data_pipeline/io/html.py; README.md ("Choosing the
extraction engine") compares what the two keep.
"""

from __future__ import annotations

from data_pipeline.document import Document
from data_pipeline.io.html import HTML_TYPES, ExtractSettings, HtmlExtractor
from data_pipeline.steps.base import Step, register


@register("extract")
class Extract(Step):
    Params = ExtractSettings

    def __init__(self, params=None):
        super().__init__(params)
        self.extractor = HtmlExtractor(self.params, self.stats.edits)

    def extract_text(self, doc: Document) -> tuple[str | None, str | None]:
        """(text, None) or (None, reason)."""
        return self.extractor.extract(doc.text, doc.metadata.get("url"))

    def process(self, doc: Document):
        if doc.metadata.get("content_type") not in HTML_TYPES:
            return None
        text, reason = self.extract_text(doc)
        if text is None:
            return reason
        doc.text = text
        del doc.metadata["content_type"]
        return None
