"""Language identification with py3langid (its model ships inside the package: no download).

Writes `metadata["lang"]` and `metadata["lang_score"]` (normalised probability, 4 decimals) and
keeps documents in `languages` (empty: any) whose score reaches `threshold` (FineWeb's 0.65).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data_pipeline.document import Document
from data_pipeline.steps.base import Filter, register

_IDENTIFIER = None


def identifier():
    global _IDENTIFIER
    if _IDENTIFIER is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _IDENTIFIER


@register("language")
class Language(Filter):
    @dataclass
    class Params:
        languages: list[str] = field(default_factory=lambda: ["en"])  # language codes to keep (py3langid); empty = any
        threshold: float = 0.65  # drop documents whose language score is below this
        max_chars: int = 20_000  # classify a prefix: long documents cost no more than this

    def __init__(self, params=None):
        super().__init__(params)
        self._classify = identifier().classify
        self._langs = set(self.params.languages)

    def keep(self, doc: Document):
        lang, score = self._classify(doc.text[: self.params.max_chars])
        score = round(float(score), 4)
        doc.metadata["lang"] = lang
        doc.metadata["lang_score"] = score
        if self._langs and lang not in self._langs:
            return False, f"lang_{lang}"
        if score < self.params.threshold:
            return False, "low_lang_score"
        return True, None
