"""Text normalisation: Unicode NFC, control characters out, whitespace made regular.

Spaces and tabs inside a line collapse to one space, lines lose trailing whitespace, runs of three
or more newlines become one blank line, and the text is stripped. Documents left empty are dropped.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from data_pipeline.document import Document
from data_pipeline.steps.base import Step, register

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_SPACES_RE = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")
_TRAILING_RE = re.compile(r" +\n| +$")
_NEWLINES_RE = re.compile(r"\n{3,}")


def normalize_text(text: str, form: str = "NFC") -> str:
    if form:
        text = unicodedata.normalize(form, text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL_RE.sub("", text)
    text = _SPACES_RE.sub(" ", text)
    text = _TRAILING_RE.sub(lambda m: "\n" if m.group(0).endswith("\n") else "", text)
    text = _NEWLINES_RE.sub("\n\n", text)
    return text.strip()


@register("normalize")
class Normalize(Step):
    @dataclass
    class Params:
        unicode_form: str = "NFC"  # NFC, NFKC, or "" to skip

    def process(self, doc: Document):
        text = normalize_text(doc.text, self.params.unicode_form)
        if text != doc.text:
            self.stats.edits["normalized"] += 1
            doc.text = text
        return None if text else "empty_after_normalize"
