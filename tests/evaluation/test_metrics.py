"""Every metric against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from shopcast.errors import ValidationError
from shopcast.evaluation import metrics as M

# Two users, four ranks each.
#   user 0: list [3, 1, 4, 0], relevant {1, 0, 9}  -> hits [F, T, F, T], |rel| = 3
#   user 1: list [2, 5, 6, 7], relevant {7}        -> hits [F, F, F, T], |rel| = 1
TOP = np.array([[3, 1, 4, 0], [2, 5, 6, 7]])
RELEVANT = [{1, 0, 9}, {7}]
HITS = np.array([[False, True, False, True], [False, False, False, True]])
N_REL = np.array([3, 1])
L3, L5 = math.log2(3), math.log2(5)


def test_rmse_and_mae() -> None:
    # errors 0, 0, 2: MSE = 4/3, RMSE = sqrt(4/3); MAE = 2/3
    assert M.rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert M.mae([1, 2, 3], [1, 2, 5]) == pytest.approx(2 / 3)
    with pytest.raises(ValidationError):
        M.rmse([1, 2], [1])
    with pytest.raises(ValidationError):
        M.mae([], [])


def test_hits_matrix_from_sets_and_from_sparse_agree() -> None:
    assert (M.hits_matrix(TOP, RELEVANT) == HITS).all()
    rows = [0, 0, 0, 1]
    cols = [1, 0, 9, 7]
    csr = sp.csr_array((np.ones(4), (rows, cols)), shape=(2, 10))
    assert (M.hits_matrix(TOP, csr) == HITS).all()
    # padding (-1) never hits, even when a relevant set is empty
    assert not M.hits_matrix(np.array([[-1, -1]]), [set()]).any()


def test_precision() -> None:
    # @2: user 0 has 1 hit of 2 -> 0.5; user 1 none -> 0.  @4: 2/4 and 1/4
    np.testing.assert_allclose(M.precision_at_k(HITS, 2), [0.5, 0.0])
    np.testing.assert_allclose(M.precision_at_k(HITS, 4), [0.5, 0.25])


def test_recall_plain_and_capped() -> None:
    # plain @2: 1/3 and 0/1; @4: 2/3 and 1/1
    np.testing.assert_allclose(M.recall_at_k(HITS, N_REL, 2), [1 / 3, 0.0])
    np.testing.assert_allclose(M.recall_at_k(HITS, N_REL, 4), [2 / 3, 1.0])
    # capped @2 divides by min(2, |rel|): 1/2 and 0/1; @4 by min(4, 3) = 3 and 1
    np.testing.assert_allclose(M.recall_at_k(HITS, N_REL, 2, capped=True), [0.5, 0.0])
    np.testing.assert_allclose(M.recall_at_k(HITS, N_REL, 4, capped=True), [2 / 3, 1.0])
    # a user without relevant items gets 0, not a division error
    np.testing.assert_allclose(M.recall_at_k(np.zeros((1, 2), bool), [0], 2), [0.0])


def test_f1() -> None:
    # user 0 @4: P = 1/2, R = 2/3 -> 2PR/(P+R) = (2/3)/(7/6) = 4/7
    # user 1 @4: P = 1/4, R = 1   -> 2·(1/4)/(5/4) = 2/5;  @2: P = R = 0 -> 0
    np.testing.assert_allclose(M.f1_at_k(HITS, N_REL, 4), [4 / 7, 0.4])
    assert M.f1_at_k(HITS, N_REL, 2)[1] == 0.0


def test_ndcg() -> None:
    # user 0 @4: DCG = 1/log2(3) + 1/log2(5); IDCG = min(4,3) = 3 hits: 1 + 1/log2(3) + 1/2
    # user 1 @4: DCG = 1/log2(5); IDCG = 1
    expected0 = (1 / L3 + 1 / L5) / (1 + 1 / L3 + 0.5)
    np.testing.assert_allclose(M.ndcg_at_k(HITS, N_REL, 4), [expected0, 1 / L5])
    # @2: user 0 DCG = 1/log2(3), IDCG = 1 + 1/log2(3); user 1 nothing
    np.testing.assert_allclose(M.ndcg_at_k(HITS, N_REL, 2), [(1 / L3) / (1 + 1 / L3), 0.0])
    # a perfect list scores 1
    assert M.ndcg_at_k(np.array([[True, True, False]]), [2], 3)[0] == pytest.approx(1.0)


def test_hit_rate_and_mrr() -> None:
    # HR@2: user 0 hit at rank 2, user 1 none; HR@4: both
    np.testing.assert_allclose(M.hit_rate_at_k(HITS, 2), [1.0, 0.0])
    np.testing.assert_allclose(M.hit_rate_at_k(HITS, 4), [1.0, 1.0])
    # first hit at rank 2 -> 1/2, at rank 4 -> 1/4; nothing at rank 1
    np.testing.assert_allclose(M.mrr_at_k(HITS, 4), [0.5, 0.25])
    np.testing.assert_allclose(M.mrr_at_k(HITS, 1), [0.0, 0.0])


def test_average_precision() -> None:
    # user 0 @4: hits at ranks 2 and 4: P@2 = 1/2, P@4 = 2/4; sum 1 / min(4, 3) = 1/3
    # user 1 @4: hit at rank 4: P@4 = 1/4; / min(4, 1) = 1/4
    np.testing.assert_allclose(M.average_precision_at_k(HITS, N_REL, 4), [1 / 3, 0.25])
    # @2: user 0 P@2 = 1/2 over min(2, 3) = 2 -> 1/4
    np.testing.assert_allclose(M.average_precision_at_k(HITS, N_REL, 2), [0.25, 0.0])


def test_ranking_metrics_averages_over_users_with_relevant_items() -> None:
    top = np.vstack([TOP, [[1, 2, 3, 4]]])
    relevant = [*RELEVANT, set()]  # the third user has nothing to find: left out
    out = M.ranking_metrics(top, relevant, ks=(2, 4), capped_recall=True)
    assert out["users"] == 2
    assert out["Precision@4"] == pytest.approx((0.5 + 0.25) / 2)
    assert out["Recall@2"] == pytest.approx((0.5 + 0.0) / 2)  # capped
    assert out["HR@2"] == pytest.approx(0.5)
    assert out["MRR@4"] == pytest.approx((0.5 + 0.25) / 2)
    assert out["MAP@4"] == pytest.approx((1 / 3 + 0.25) / 2)
    with pytest.raises(ValidationError):
        M.ranking_metrics(top, relevant, ks=(5,))
    with pytest.raises(ValidationError):
        M.ranking_metrics(top, relevant, metrics=("nope",))


def test_catalog_coverage() -> None:
    # 8 distinct items of a 10-item catalog; padding is not an item
    assert M.catalog_coverage(TOP, 10) == pytest.approx(0.8)
    assert M.catalog_coverage(np.array([[1, -1], [1, 1]]), 4) == pytest.approx(0.25)


def test_novelty() -> None:
    # counts 4, 2, 1, 0 of 4 users: p = 1, 1/2, 1/4, and 1/4 for the unseen item (count 1)
    # self-information -log2 p = 0, 1, 2, 2 -> mean 5/4
    counts = np.array([4, 2, 1, 0])
    assert M.novelty(np.array([[0, 1], [2, 3]]), counts, 4) == pytest.approx(1.25)
    # padding ignored: only item 1 -> 1 bit
    assert M.novelty(np.array([[1, -1]]), counts, 4) == pytest.approx(1.0)


def test_intra_list_diversity_with_categories_and_features() -> None:
    cats = np.array([0, 0, 1, 2])
    # [0, 1, 2]: pairs (0,1) same category -> 0, (0,2) -> 1, (1,2) -> 1: mean 2/3
    assert M.intra_list_diversity(np.array([[0, 1, 2]]), cats) == pytest.approx(2 / 3)
    # second list [0, 1] (padded): one pair, same category -> 0; mean over lists 1/3
    top = np.array([[0, 1, 2], [0, 1, -1]])
    assert M.intra_list_diversity(top, cats) == pytest.approx(1 / 3)
    # dense features: f0 = (1, 0), f1 = (1, 1): cos = 1/sqrt 2 -> distance 1 - 0.7071
    feats = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert M.intra_list_diversity(np.array([[0, 1]]), feats) == pytest.approx(1 - 2**-0.5)
    # sparse input gives the same; an item without features is at distance 1
    assert M.intra_list_diversity(np.array([[0, 1]]), sp.csr_array(feats)) == pytest.approx(
        1 - 2**-0.5
    )
    assert M.intra_list_diversity(np.array([[0, 5]]), feats) == pytest.approx(1.0)
    # no list with two items
    assert M.intra_list_diversity(np.array([[0, -1]]), cats) == 0.0
