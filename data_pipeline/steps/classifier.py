"""Model-based quality filter: hashed word n-grams + logistic regression (scikit-learn), or fastText.

The default backend needs nothing beyond scikit-learn and trains the same kind of linear
bag-of-n-grams model as fastText. `train_classifier` fits it from positive and negative
documents; the model is saved as a plain `.npz` (weights, intercept, the hashing settings as
JSON) and loaded with `allow_pickle=False`: no pickle anywhere. The `classifier` step writes the
score to `metadata[score_field]` (default `quality_score`) and keeps documents whose score
reaches `threshold`.

The step also loads fastText supervised `.bin` models (DCLM / FineWeb-Edu quality classifiers,
fastText language id; see `fasttext_model.py`), told apart from `.npz` models by the file's magic
bytes; their score is the probability of `label` (default `__label__hq`).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipeline.document import Document
from data_pipeline.steps.base import Filter, register
from data_pipeline.steps.fasttext_model import is_holdout
from framework.configtree import ConfigError

FORMAT = "anvil-hashed-logreg-v1"


def _vectorizer(cfg: dict):
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        n_features=cfg["n_features"],
        ngram_range=(1, cfg["ngram_max"]),
        alternate_sign=False,
        norm="l2",
        lowercase=True,
        dtype=np.float32,
    )


def train_classifier(
    positive: list[str],
    negative: list[str],
    output: str | Path,
    *,
    n_features: int = 2**20,
    ngram_max: int = 2,
    C: float = 4.0,
    max_chars: int = 20_000,
    holdout: float = 0.1,
    max_docs: int | None = None,
) -> dict:
    """Train on the documents of `positive` / `negative` inputs (any reader format); return metrics."""
    from sklearn.linear_model import LogisticRegression

    from data_pipeline.io.readers import iter_documents

    cfg = {"format": FORMAT, "n_features": n_features, "ngram_max": ngram_max, "max_chars": max_chars}
    texts, labels, held = [], [], []
    for label, inputs in ((1, positive), (0, negative)):
        for i, doc in enumerate(iter_documents(inputs)):
            if max_docs is not None and i >= max_docs:
                break
            texts.append(doc.text[:max_chars])
            labels.append(label)
            held.append(is_holdout(doc.id, holdout))
    y, held = np.array(labels), np.array(held)
    if len(set(y[~held].tolist())) < 2:
        raise ValueError("training needs at least one positive and one negative document outside the holdout")
    X = _vectorizer(cfg).transform(texts)
    model = LogisticRegression(C=C, max_iter=1000, solver="liblinear", random_state=0)
    model.fit(X[~held], y[~held])
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(
        tmp,
        coef=model.coef_[0].astype(np.float32),
        intercept=np.float32(model.intercept_[0]),
        config=np.array(json.dumps(cfg)),
    )
    tmp.replace(out)
    metrics = {
        "docs": int(len(y)),
        "positive": int(y.sum()),
        "negative": int((1 - y).sum()),
        "train_accuracy": float(model.score(X[~held], y[~held])),
    }
    if held.any():
        metrics["holdout_docs"] = int(held.sum())
        metrics["holdout_accuracy"] = float(model.score(X[held], y[held]))
    return metrics


class QualityModel:
    def __init__(self, path: str | Path):
        with np.load(path, allow_pickle=False) as data:
            self.cfg = json.loads(str(data["config"]))
            if self.cfg.get("format") != FORMAT:
                raise ValueError(f"{path}: not an Anvil quality model (format {self.cfg.get('format')!r})")
            self.coef = data["coef"].astype(np.float64)
            self.intercept = float(data["intercept"])
        self.vectorizer = _vectorizer(self.cfg)

    def scores(self, texts: list[str]) -> np.ndarray:
        X = self.vectorizer.transform([t[: self.cfg["max_chars"]] for t in texts])
        return 1.0 / (1.0 + np.exp(-(X @ self.coef + self.intercept)))


@register("classifier")
class QualityClassifier(Filter):
    @dataclass
    class Params:
        model: str = ""  # .npz (train-classifier) or fastText .bin
        threshold: float = 0.5  # keep documents whose score is >= this
        label: str = "__label__hq"  # fastText only: the label whose probability is the score
        score_field: str = "quality_score"  # metadata key the score is written to

        def validate(self) -> None:
            if not self.model:
                raise ConfigError(
                    "classifier.model: a model file is required (train one with `anvil data train-classifier`)"
                )
            if not Path(self.model).is_file():
                raise ConfigError(f"classifier.model: file not found: {self.model}")
            if not self.score_field:
                raise ConfigError("classifier.score_field: must be a non-empty metadata key")

    def __init__(self, params=None):
        super().__init__(params)
        self.model = load_model(self.params.model, self.params.label)

    def keep(self, doc: Document):
        score = round(float(self.model.scores([doc.text])[0]), 4)
        doc.metadata[self.params.score_field] = score
        return (True, None) if score >= self.params.threshold else (False, "below_threshold")


def load_model(path: str, label: str = "__label__hq"):
    """A `.npz` QualityModel or a fastText model, by the file's first bytes; errors name the YAML key."""
    from data_pipeline.steps.fasttext_model import FastTextModel, is_fasttext_file

    if is_fasttext_file(path):
        try:
            return FastTextModel(path, label)
        except KeyError as exc:
            raise ConfigError(f"classifier.label: {exc.args[0]}") from None
        except (ValueError, RuntimeError, MemoryError) as exc:
            raise ConfigError(f"classifier.model: {path}: cannot load the fastText model ({exc})") from None
    expected = "expected an Anvil .npz model (anvil data train-classifier) or a fastText .bin/.ftz model"
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != b"PK\x03\x04":  # .npz files are zip archives
        raise ConfigError(
            f"classifier.model: {path}: not a model the classifier can load: {expected} (the file starts with {head!r})"
        )
    try:
        return QualityModel(path)
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ConfigError(
            f"classifier.model: {path}: not a model the classifier can load: {expected} ({exc})"
        ) from None
