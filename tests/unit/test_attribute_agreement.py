"""bench.quality.attribute_agreement on a hand-made ranked run: shares computed by hand."""

import pyarrow as pa
import pyarrow.parquet as pq

from bench.quality.attribute_agreement import agreement


def test_agreement_counts_matching_attributes_in_the_top_k(tmp_path):
    catalog = pa.table({"product_id": ["1", "2", "3", "4"], "gender": ["Men", "Men", "Women", "Men"],
                        "articleType": ["Tshirts", "Tshirts", "Tshirts", "Shoes"],
                        "baseColour": ["Red", "Blue", "Red", "Red"]})
    judged = pa.table({"query": ["red tshirts men", "shoes"], "product_id": ["1", "4"], "label": [3.0, 3.0]})
    ranked = pa.table({"query": ["red tshirts men"] * 3 + ["shoes"] * 2, "product_id": ["2", "3", "4", "4", "1"],
                       "rank": [1, 2, 3, 1, 2], "score": [0.9, 0.8, 0.7, 0.9, 0.1]})
    for name, table in (("c", catalog), ("j", judged), ("r", ranked)):
        pq.write_table(table, tmp_path / f"{name}.parquet")
    out = agreement(str(tmp_path / "r.parquet"), str(tmp_path / "c.parquet"), str(tmp_path / "j.parquet"), k=2)
    assert out["queries"] == 2 and out["queries_naming_a_colour"] == 1
    # "red tshirts men" top 2: product 2 (Men, Tshirts, Blue) and 3 (Women, Tshirts, Red)
    assert out["naming_a_colour"] == {"gender": 0.5, "articleType": 1.0, "baseColour": 0.5}
    # plus "shoes" top 2: product 4 (all match) and 1 (Men, Tshirts, Red): 4 rows over both queries
    assert out["all"] == {"gender": 0.75, "articleType": 0.75, "baseColour": 0.75}
