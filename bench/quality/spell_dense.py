"""The query tower fed spelling-corrected queries: does it lift the dense model alone and the re-ranker over it?

Real query logs misspell ("condiut pvc", "porcelian tile", "70 celing fan"); the re-ranker's word list already
corrects them against the catalog's own words (``lexical.SpellCorrector``), the query tower reads them as typed.
Here the tower's query vector is the mean of its vectors for the query as typed and as corrected (unit length),
for the queries the corrector changes; a bad correction ("snow thower" -> "snow shower") then only half-moves the
vector. Measured on the dense model alone and under the default re-ranker (LambdaMART, the shipped features and
settings), each ranker fitted on the train queries encoded the same way, against the typed queries, side by side.

    python -m bench.quality.spell_dense --catalog data/homedepot/catalog.parquet \\
        --train data/homedepot/train/judgments.parquet --val data/homedepot/val/judgments.parquet \\
        --model models:/vitrine-homedepot@challenger --workdir runs/g2 --embeddings <its vectors> \\
        --output reports/spell-dense-homedepot/spell_dense.json
"""

from __future__ import annotations

import logging
import time

import numpy as np


def spelled(dense, titles: list[str]) -> tuple[object, object]:  # noqa: ANN001 - DenseRetriever
    """A DenseRetriever over the same vectors whose query vector is the mean of typed and corrected, and the
    corrector (built from the catalog's titles, real words kept, as the product word list builds it)."""
    from vitrine.evaluate import DenseRetriever
    from vitrine.index.faiss_index import stored_vectors
    from vitrine.lexical import SpellCorrector, dictionary_words
    from vitrine.rerank import unit_rows

    speller = SpellCorrector(titles, known=dictionary_words())

    def encode(queries: list[str]) -> np.ndarray:
        typed = unit_rows(np.asarray(dense.encode_queries(queries), np.float32))
        fixed = [speller.correct(q) for q in queries]
        changed = [i for i, (q, f) in enumerate(zip(queries, fixed, strict=True)) if f != q.lower()]
        if changed:
            other = unit_rows(np.asarray(dense.encode_queries([fixed[i] for i in changed]), np.float32))
            typed[changed] = unit_rows(typed[changed] + other)
        return typed

    return DenseRetriever(f"{dense.name}+spelling", stored_vectors(dense.index), encode), speller


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m bench.quality.spell_dense``."""
    from bench.quality.common import ranker_bench_parser

    p = ranker_bench_parser(__doc__, prf=3)
    p.add_argument("--seeds", default="0", help="ranker seeds, comma-separated")
    p.add_argument("--dense-only", action="store_true", help="measure the retrievers alone, fit no ranker")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from bench.quality.common import fit_default_ranker, judged_catalog, retriever, top_rows, val_metrics, write_report
    from vitrine.errors import VitrineError
    from vitrine.evaluate import Relevance
    from vitrine.rerank import candidate_builder

    rel = Relevance()
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        cat = judged_catalog(args.catalog, train=args.train, val=args.val)
        typed, label = retriever(cat, args.model, args.workdir, args.embeddings, args.val)
    except (VitrineError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    fixed, speller = spelled(typed, cat.titles)
    ids, titles, judged = cat.ids, cat.titles, cat.judged
    tq, vq = sorted(judged["train"]), sorted(judged["val"])
    changed = {part: sum(speller.correct(q) != q.lower() for q in qs) for part, qs in (("train", tq), ("val", vq))}

    def dense_alone(dense) -> dict[str, float]:  # noqa: ANN001
        _, rows = dense.search(vq, 100)
        return val_metrics(cat, {q: [int(r) for r in row] for q, row in zip(vq, rows, strict=True)}, rel)

    def reranked(dense) -> list[dict[str, float]]:  # noqa: ANN001
        t0 = time.time()
        builder = candidate_builder(ids, titles, dense, 200, 200, "product", dense.index, args.prf)
        tx, trows = builder.build(tq, progress="train features")
        vx, vrows = builder.build(vq, progress="val features")
        features_s, out = round(time.time() - t0, 1), []
        for seed in seeds:
            t1 = time.time()
            run = top_rows(fit_default_ranker(cat, tx, trows, args.prf, seed), vx, vrows, vq)
            out.append({**val_metrics(cat, run, rel), "seed": seed, "features_s": features_s,
                        "fit_s": round(time.time() - t1, 1)})
        return out

    results = []
    for name, dense in (("typed", typed), ("spelling", fixed)):
        row = {"queries": name, "dense": dense_alone(dense)}
        if not args.dense_only:
            row["rerank"] = reranked(dense)
        print(row, flush=True)
        results.append(row)
    write_report(args.output, {"model": label, "prf": args.prf, "changed_queries": changed,
                               "train_queries": len(tq), "val_queries": len(vq), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
