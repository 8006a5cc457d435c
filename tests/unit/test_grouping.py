"""Hard in-batch negatives: batches packed by a catalog column (data.group_column) keep every row once."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.common import catalog_index
from pipelines.pretrain import check_grouping
from vitrine.catalog.derive import derive_queries
from vitrine.config import DataConfig
from vitrine.errors import ConfigError
from vitrine.features import Featurizer, PairBuilder, id_hash
from vitrine.model.encoders import resolve_text_encoder
from vitrine.train.loop import regroup


def batches(groups: list[int], size: int) -> list[dict[str, torch.Tensor]]:
    rows = torch.arange(len(groups))
    g = torch.tensor(groups)
    return [{"row": rows[i:i + size], "g_hash": g[i:i + size]} for i in range(0, len(groups), size)]


def same_group_pairs(batch: dict[str, torch.Tensor]) -> int:
    g = batch["g_hash"]
    return int((g[:, None] == g[None, :]).sum() - len(g))


def test_regroup_keeps_every_row_once_and_packs_groups():
    groups = [i % 8 for i in range(64)]  # 8 groups interleaved: random-like batches of 8 hold one of each
    before = batches(groups, 8)
    after = list(regroup(before, window=4, generator=torch.Generator().manual_seed(0)))
    assert len(after) == len(before) and all(len(b["row"]) == 8 for b in after)
    assert sorted(torch.cat([b["row"] for b in after]).tolist()) == list(range(64))
    for b in after:  # rows travel with their own group
        assert b["g_hash"].tolist() == [groups[r] for r in b["row"].tolist()]
    assert sum(map(same_group_pairs, before)) == 0
    assert sum(map(same_group_pairs, after)) == 8 * 2 * 4 * 3  # 8 batches, each 2 whole groups of 4 rows


def test_regroup_flushes_a_short_tail_and_passes_through_when_off():
    before = batches([0, 1] * 20, 8)  # 5 batches: one full window of 4 and a tail of 1
    after = list(regroup(before, window=4))
    assert len(after) == 5 and sorted(torch.cat([b["row"] for b in after]).tolist()) == list(range(40))
    assert list(regroup(before, window=1)) == before
    plain = [{"row": b["row"]} for b in before]
    assert list(regroup(plain, window=4)) == plain


def test_pairs_carry_the_group_column_as_a_hash(sample_catalog):
    catalog = pq.read_table(sample_catalog).slice(0, 20)
    catalog = catalog.set_column(catalog.schema.get_field_index("articleType"), "articleType",
                                 pa.array(catalog.column("articleType").to_pylist()[:-1] + [None]))
    pairs = PairBuilder(derive_queries(catalog, per_product=1, seed=0), group_column="articleType")(catalog)
    by_id = dict(zip(catalog.column("product_id").to_pylist(), catalog.column("articleType").to_pylist(),
                     strict=True))
    assert pairs.column("group").to_pylist() == [by_id[p] or "" for p in pairs.column("product_id").to_pylist()]
    rows = Featurizer(str(resolve_text_encoder("minilm")), 32, 8, 8)(
        {k: pairs.column(k).to_pylist() for k in pairs.column_names})
    assert rows["g_hash"].tolist() == id_hash(pairs.column("group").to_pylist()).tolist()
    plain = Featurizer(str(resolve_text_encoder("minilm")), 32, 8, 8)(
        {k: pairs.column(k).to_pylist() for k in pairs.column_names if k != "group"})
    assert "g_hash" not in plain and plain["q_hash"].tolist() == rows["q_hash"].tolist()  # same-query masking


@pytest.mark.parametrize(("data", "message"), [
    (DataConfig(group_column="colour"),
     r"data.group_column='colour' is not a catalog column; use one of \['articleType'"),
    (DataConfig(group_column="articleType", group_window=0), "data.group_window=0"),
])
def test_bad_grouping_is_refused_with_the_fix(data, message):
    with pytest.raises(ConfigError, match=message):
        check_grouping(data, ["product_id", "title", "articleType", "gender"])
    check_grouping(DataConfig(group_column="articleType"), ["product_id", "title", "articleType"])


def test_two_catalogs_offer_the_union_of_their_columns(tmp_path, sample_catalog):
    """The both-catalog recipe: Home Depot (no attributes) first, Myntra second; articleType is still offered."""
    home = pq.read_table(sample_catalog.parent / "homedepot_products.parquet").slice(0, 30)
    myntra = pq.read_table(sample_catalog).slice(0, 30)
    pq.write_table(home, tmp_path / "home.parquet")
    pq.write_table(myntra, tmp_path / "myntra.parquet")
    table, report, files = catalog_index(f"{tmp_path / 'home.parquet'},{tmp_path / 'myntra.parquet'}")
    assert "articleType" not in home.column_names and "articleType" in table.column_names
    assert table.num_rows == report.rows_out == 60 and len(files) == 2
    assert table.column("articleType").null_count == 30  # Home Depot's rows: no article type
    check_grouping(DataConfig(group_column="articleType"), table.column_names)
