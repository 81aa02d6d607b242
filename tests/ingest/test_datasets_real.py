"""The five shared REAL datasets, imported whole into the memory store; the counts are
the ones published in each dataset's README (skipped when the files are absent)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shopcast.ingest.datasets import DATASETS
from shopcast.ingest.importer import ImportSummary, import_dataset
from shopcast.storage import Store, open_store

pytestmark = pytest.mark.dataset


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store("memory://")
    yield s
    s.close()


def run(store: Store, name: str, data_path: Path) -> ImportSummary:
    if not (data_path / DATASETS[name].folder).is_dir():
        pytest.skip(f"{name} not under {data_path}")
    return import_dataset(store, name, data_path=data_path)


def type_counts(store: Store) -> dict[str, int]:
    counts = store.events.frame().group_by("type").len()
    return dict(zip(counts["type"].to_list(), counts["len"].to_list(), strict=True))


def test_movielens_100k(store: Store, data_path: Path) -> None:
    s = run(store, "movielens-100k", data_path)
    assert (s.rows_read, s.accepted, s.duplicates, s.rejected) == (100_000, 100_000, 0, {})
    assert (s.users, s.items) == (943, 1682)
    ratings = store.events.frame().group_by("value").len().sort("value")["len"].to_list()
    assert ratings == [6110, 11370, 27145, 34174, 21201]


def test_online_retail(store: Store, data_path: Path) -> None:
    s = run(store, "online-retail", data_path)
    assert s.rows_read == 541_909
    assert s.rejected == {
        "InvoiceNo: adjustment, not a sale": 3,
        "InvoiceNo: cancellation (C…)": 9288,
        "Quantity: not positive": 1336,
    }
    # 5,268 fully duplicated lines in the file; 5,231 of them are sales (the rest are
    # cancellations), so the store sees 5,231 duplicates.
    assert (s.accepted, s.duplicates) == (526_051, 5231)
    assert (s.users, s.items) == (4372, 4070)
    frame = store.events.frame()  # figures re-derived with plain polars on the parquet
    assert frame["user_id"].null_count() == 133_319
    assert frame["session_id"].n_unique() == 20_725
    again = import_dataset(store, "online-retail", data_path=data_path)
    assert (again.accepted, again.duplicates) == (0, 531_282)


def test_amazon_beauty(store: Store, data_path: Path) -> None:
    s = run(store, "amazon-s3rec", data_path)
    assert (s.rows_read, s.accepted, s.duplicates, s.rejected) == (198_502, 198_502, 0, {})
    assert (s.users, s.items) == (22_363, 12_101)


def test_taobao(store: Store, data_path: Path) -> None:
    s = run(store, "taobao", data_path)
    assert (s.rows_read, s.accepted, s.duplicates, s.rejected) == (84_287, 84_287, 0, {})
    assert (s.users, s.items) == (814, 55_233)
    assert type_counts(store) == {
        "view": 75_693,
        "add_to_cart": 4494,
        "favorite": 2351,
        "purchase": 1749,
    }


def test_rees46(store: Store, data_path: Path) -> None:
    s = run(store, "rees46", data_path)
    assert (s.rows_read, s.accepted, s.duplicates, s.rejected) == (17_434, 17_429, 5, {})
    assert (s.users, s.items) == (4504, 6493)
    assert store.events.frame()["session_id"].n_unique() == 5066
    # The README's 17,055 / 165 / 214 less the 5 duplicated lines (4 views, 1 cart).
    assert type_counts(store) == {"view": 17_051, "add_to_cart": 164, "purchase": 214}
