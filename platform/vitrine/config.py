"""Job configuration: frozen dataclasses, loaded from YAML plus ``--key=value`` overrides (``config_io``).

One dataclass per job (``PretrainJob``, ``IndexJob``, ``ServeJob``, ``DemoJob``), each composed of the
shared sections below; ``config_io`` loads them and refuses unknown keys and ill-typed values by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SAMPLE_CATALOG = str(SAMPLE_DIR / "myntra_sample.parquet")


@dataclass(frozen=True)
class DataConfig:
    """Where the catalog and query log live and how rows become tensors."""

    catalog: str = SAMPLE_CATALOG  # Parquet file or directory of part files
    queries: str = ""  # query-log Parquet (query, product_id, label); "" = derive from catalog attributes
    image_size: int = 96  # square side images are resized to; 224 for the GPU recipe
    max_query_len: int = 16
    max_title_len: int = 32
    min_label: float = 0.0  # query-log rows with label <= min_label are not positives
    hard_negative_max_label: float = 0.0  # > 0: judged rows with label <= this are hard negatives of their query
    data_actors: int = 1  # Ray Data actors decoding images and tokenizing
    cpus_per_data_task: float = 0.25  # logical CPUs per Ray Data task/actor (leave room beside train workers)
    group_column: str = ""  # catalog column packed together into batches (hard in-batch negatives); "" = random
    group_window: int = 4  # batches pooled and re-cut by group_column (1 = off)
    term_columns: str = ""  # comma-separated catalog columns whose values count as product terms (mask_satisfied)
    title_queries: float = 0.0  # pseudo-queries cut from titles per catalog product, beside the log (0 = off)
    idle_backoff_ms: float = 20.0  # least ms between Ray Data loop steps (vitrine.train.ingest; 0 = Ray's own loop)


@dataclass(frozen=True)
class ModelConfig:
    """The three towers and the fusion; encoder names resolve to shipped weights or a local path."""

    text_encoder: str = "minilm"  # "minilm" (shipped) or a local Hugging Face checkpoint directory
    image_encoder: str = "mobilenet_v2"  # "mobilenet_v2" (shipped ImageNet) or a local HF vision checkpoint
    embed_dim: int = 256
    share_text_encoders: bool = False  # one transformer for query and title (separate heads either way)
    modal_adaptation: bool = True  # per-product title/image weights; False = fixed mean of the two
    modal_init_image_weight: float = 0.12  # the gate's image weight before training (title-led; 0.5 = balanced)
    freeze_image_layers: int = 14  # MobileNetV2 feature blocks kept frozen (0 = train all, 19 = all frozen)
    freeze_text_embeddings: bool = False  # keep the text encoders' token embeddings at their pretrained values
    freeze_text_layers: int = 0  # lowest transformer layers of both text towers kept pretrained (> 0 freezes the
    # token embeddings too, so backward stops there: a cheaper CPU step; 0 = train all)
    use_images: bool = True  # False = text-only product tower (every product treated as having no image)
    colour_bins: int = 0  # > 0: a centre-weighted RGB histogram (bins per channel) joins the image features


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and Ray Train scaling."""

    batch_size: int = 32  # per worker
    max_steps: int = 60
    lr: float = 3e-5  # encoder learning rate
    head_lr: float = 1e-3  # projection heads, gate and temperature
    lr_schedule: str = "constant"  # "constant" | "linear" | "cosine": decay of both groups' rates to 0 at max_steps
    warmup_steps: int = 0  # linear warm-up from 0 over this many steps (any schedule)
    ema_decay: float = 0.0  # > 0: the saved model is a moving average of the weights (vitrine.train.averaging)
    weight_decay: float = 0.01
    temperature: float = 0.05  # initial value of the learnable softmax temperature
    learn_temperature: bool = True
    num_workers: int = 2
    cpus_per_worker: float = 0.5  # fractional so Ray Data tasks always find a CPU on small machines
    use_gpu: str = "auto"  # "auto" | "true" | "false"
    checkpoint_every: int = 50
    log_every: int = 10
    shuffle_buffer: int = 256  # rows in Ray Data's local shuffle buffer
    torch_threads: int = 1  # intra-op threads per worker (0 = torch default)
    seed: int = 0


@dataclass(frozen=True)
class LossConfig:
    """Objectives, negatives and their weights (each idea of the papers is a switch for ablations)."""

    w_query_product: float = 1.0  # query <-> fused product InfoNCE (both directions)
    w_query_title: float = 0.2  # query <-> title alignment
    w_query_image: float = 0.1  # query <-> image alignment (products with an image)
    w_title_image: float = 0.5  # title <-> image alignment (products with an image)
    visual_task: str = "contrastive"  # "contrastive" | "regression" | "none": masked-patch visual pre-training
    w_visual: float = 0.2
    mask_ratio: float = 0.25  # share of image grid cells masked for the visual task
    keyword_enhancement: bool = True  # keyword-enhanced query view + same-query masking
    num_keywords: int = 3
    w_keyword: float = 0.5  # enhanced query <-> product InfoNCE, and raw -> enhanced query consistency
    gather_negatives: bool = True  # cross-worker negatives (all-gather); False = each worker's own batch
    memory_bank: int = 256  # recent product embeddings kept as extra negatives (0 = off)
    mask_satisfied: bool = False  # a product holding every term of another row's query is not its negative


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking and registry; an empty URI means ``$MLFLOW_TRACKING_URI`` or sqlite in the workdir."""

    tracking_uri: str = ""
    experiment: str = "vitrine"
    model_name: str = "vitrine"
    alias: str = "champion"


@dataclass(frozen=True)
class IndexConfig:
    """A FAISS index described by a factory string, a metric and search-time parameters."""

    factory: str = "Flat"
    metric: str = "ip"  # "ip" (cosine on normalised vectors) or "l2"
    search_params: dict[str, Any] = field(default_factory=dict)  # e.g. {"efSearch": 128} or {"nprobe": 16}
    embed_batch_size: int = 256  # rows per Ray Data batch (one actor call)
    embed_concurrency: int = 1  # embedding actors (one model load and one CPU, or one GPU, each)
    embed_chunk: int = 0  # rows per forward pass inside a batch; 0: 16 on CPU, the whole batch on GPU
    embed_threads: int = 0  # torch threads per embedding actor; 0: the machine's CPUs / embed_concurrency
    train_size: int = 100_000  # vectors sampled to train IVF/PQ indexes
    device: str = "auto"  # "auto" (GPUs when faiss sees any), "cpu" or "gpu"
    recall_queries: int = 500  # held-out query vectors for recall@10 vs an exact Flat search


SERVE_LAYOUTS = ("split", "colocated")  # split: tower / index / ingress deployments; colocated: one deployment


@dataclass(frozen=True)
class ServeConfig:
    """Ray Serve application settings."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.005
    num_replicas: int = 1
    default_k: int = 10
    poll_interval_s: float = 5.0  # how often the app checks the registry alias (0 = stay on the deployed version)
    search_params: dict[str, Any] = field(default_factory=dict)  # live index knobs, e.g. {"efSearch": 128}
    layout: str = "split"  # one of SERVE_LAYOUTS
    query_precision: str = "fp32"  # the query tower on CPU replicas: fp32 or int8 (vitrine.model.quantize)


@dataclass(frozen=True)
class PretrainJob:
    """``vitrine pretrain``: train the three towers, log and register the model."""

    workdir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass(frozen=True)
class IndexJob:
    """``vitrine index``: embed the catalog with a registered model and build its FAISS index."""

    workdir: str = "runs"
    model_uri: str = ""  # models:/<name>@<alias> or a local model dir; "" = tracking.model_name@alias
    data: DataConfig = field(default_factory=DataConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass(frozen=True)
class EvaluateJob:
    """``vitrine evaluate``: retrieve over a full catalog for every judged query and score the ranking."""

    workdir: str = "runs"
    model: str = ""  # models:/<name>@<alias> | a model dir | "bm25" | "bm25-product" | "pretrained" | hybrid:<dense>
    catalog: str = str(SAMPLE_DIR / "homedepot_products.parquet")
    judgments: str = str(SAMPLE_DIR / "homedepot_judgments.parquet")
    k: int = 100
    relevant_min: float = 2.0  # label >= relevant_min counts as relevant (Recall, MRR)
    gain_offset: float = 1.0  # nDCG gain = max(0, label - gain_offset)
    output: str = ""  # metrics JSON path ("" = none)
    run_output: str = ""  # ranked results Parquet: query, product_id, rank, score
    embeddings: str = ""  # product vectors Parquet of this model (from `vitrine index`/evaluate): skip embedding
    hybrid_weight: float = 0.5  # hybrid:<model>: dense share of the fused score (0.5 = plain RRF)
    hybrid_fusion: str = "rrf"  # hybrid:<model>: "rrf" (reciprocal rank) or "convex" (blend of per-query scaled scores)
    hybrid_depth: int = 200  # hybrid:<model>: candidates taken from each side before fusion
    rerank: str = ""  # a `vitrine rerank` folder: BM25 + --model candidates ordered by that trained ranker
    query_precision: str = "fp32"  # a trained model's query tower: fp32 or int8 (CPU; vitrine.model.quantize)
    data: DataConfig = field(default_factory=DataConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass(frozen=True)
class RerankJob:
    """``vitrine rerank``: train a LambdaMART re-ranker over BM25 + dense candidates on a judged query log."""

    workdir: str = "runs"
    model: str = ""  # the dense model whose scores it uses: models:/<name>@<alias> | a model dir | "pretrained"
    catalog: str = str(SAMPLE_DIR / "homedepot_products.parquet")
    judgments: str = str(SAMPLE_DIR / "homedepot_judgments.parquet")  # TRAIN judgments (never the validation set)
    embeddings: str = ""  # product vectors Parquet of --model (skip embedding the catalog)
    out: str = ""  # folder for reranker.txt + reranker.json ("" = <workdir>/rerankers/<model label>)
    attach: bool = False  # tag the registry version of --model with the ranker: `vitrine serve` then re-ranks with it
    depth: int = 200  # candidates taken from each side (100: 0.445 / 0.792 on Home Depot; 200: 0.448 / 0.804)
    char_depth: int = 200  # candidates from BM25 over title character trigrams (0 = none; see docs/quality.md)
    lexical: str = "product"  # word list: product (units normalised, spelling corrected) | bm25 (stock tokens)
    prf: int = 3  # neighbour-centroid features from each list's top N product vectors (0 = off; docs/quality.md)
    trees: int = 300
    seed: int = 0
    relevant_min: float = 2.0
    gain_offset: float = 1.0
    cross_top: int = 0  # the ranker's top N re-scored by a cross-encoder (0 = none; 30: docs/quality.md)
    cross_encoder: str = "minilm"  # its initial weights: the shipped MiniLM or a local Hugging Face checkpoint dir
    cross_negatives: int = 4  # unjudged products per training query, from the top --cross_pool of:
    cross_pool: int = 30
    cross_pool_from: str = "words"  # those negatives from: words (the word list) | ranker (its top) | mix (both)
    cross_steps: int = 0  # optimiser steps (0 = one pass over the pairs)
    cross_batch: int = 32
    cross_lr: float = 5e-5
    cross_holdout: float = 0.1  # share of training queries held out of both fits to choose the blend weight
    cross_weight: float = -1.0  # blend weight of the cross-encoder (-1 = choose it on the held-out queries)
    data: DataConfig = field(default_factory=DataConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass(frozen=True)
class EnsembleJob:
    """``vitrine ensemble``: register several trained models as one model version (their cosines averaged)."""

    workdir: str = "runs"
    members: tuple[str, ...] = ()  # models:/<name>/<version> | models:/<name>@<alias> | model dirs (2 or more)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass(frozen=True)
class PromoteJob:
    """``vitrine promote``: move ``to_alias`` to the candidate only if it passes the gate against the champion."""

    workdir: str = "runs"
    model_name: str = "vitrine"
    candidate: str = "challenger"  # alias or version number of the candidate
    to_alias: str = "champion"
    catalog: str = str(SAMPLE_DIR / "homedepot_products.parquet")  # the named evaluation set
    judgments: str = str(SAMPLE_DIR / "homedepot_judgments.parquet")
    max_ndcg_drop: float = 0.005  # candidate nDCG@10 may be at most 0.5% (relative) below the champion's
    min_recall_gain: float = 0.0  # candidate Recall@100 minus champion's must be >= this (0 = not worse)
    force: bool = False  # move the alias whatever the gate says (logged)
    data: DataConfig = field(default_factory=DataConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass(frozen=True)
class ReportJob:
    """``vitrine report``: train every ablation on the same recipe and budget, evaluate, write a table."""

    workdir: str = "runs/report"
    recipe: str = "configs/recipes/myntra.yaml"  # the PretrainJob YAML every variant starts from
    ablation_dir: str = "configs/ablations"
    ablations: tuple[str, ...] = ("full", "no_modal_adaptation", "no_keyword_enhancement", "no_visual_task",
                                  "no_memory_bank", "text_only", "modal_balanced_init", "recipe")
    max_steps: int = 200  # the same training budget for every variant
    overrides: tuple[str, ...] = ()  # extra --key=value applied to every variant, e.g. data.catalog=...
    catalog: str = ""  # evaluation catalog ("" = the recipe's catalog)
    judgments: str = ""  # validation judgments (required)
    baselines: tuple[str, ...] = ("bm25", "pretrained")
    label: str = ""  # data description for the report's title, e.g. "Myntra, derived queries"
    output: str = "reports/ablation"  # report.md, report.json, report.png
    resume: bool = True  # keep variants already finished in output/report.json


@dataclass(frozen=True)
class ServeJob:
    """``vitrine serve``: host the query tower and the index behind HTTP."""

    workdir: str = "runs"
    model_uri: str = ""
    serve: ServeConfig = field(default_factory=ServeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    blocking: bool = True


@dataclass(frozen=True)
class DemoJob:
    """``vitrine demo``: pretrain -> register -> embed + index -> serve -> search, on the bundled sample."""

    workdir: str = "runs/demo"
    queries: tuple[str, ...] = ("red tshirt for men", "women black handbag", "blue jeans", "sports shoes")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
