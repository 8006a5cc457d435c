"""Job configs: defaults, YAML + ``--key=value`` overrides, type checks and error messages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vitrine.config import SAMPLE_CATALOG, DemoJob, EvaluateJob, IndexJob, PretrainJob, ServeJob
from vitrine.config_io import flatten, from_dict, load_config, parse_overrides
from vitrine.errors import ConfigError, VitrineError


def write_yaml(tmp_path: Path, text: str, name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --- defaults ------------------------------------------------------------------------------------


def test_defaults_load_without_file_or_overrides():
    job = load_config(PretrainJob)
    assert job == PretrainJob()
    assert job.workdir == "runs"
    assert job.data.catalog == SAMPLE_CATALOG
    assert Path(job.data.catalog).is_file()
    assert job.data.image_size == 96
    assert job.model.text_encoder == "minilm"
    assert job.model.embed_dim == 256
    assert job.train.lr == 3e-5
    assert job.train.max_steps == 60
    assert job.train.use_gpu == "auto"
    assert job.tracking.alias == "champion"


def test_defaults_of_every_job():
    index = load_config(IndexJob)
    assert index.index.factory == "Flat"
    assert index.index.metric == "ip"
    assert index.index.search_params == {}
    assert index.model_uri == ""
    serve = load_config(ServeJob)
    assert serve.serve.port == 8000
    assert serve.serve.host == "127.0.0.1"
    assert serve.blocking is True
    demo = load_config(DemoJob)
    assert demo.workdir == "runs/demo"
    assert demo.queries == ("red tshirt for men", "women black handbag", "blue jeans", "sports shoes")


def test_configs_are_frozen():
    job = load_config(PretrainJob)
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.train.lr = 1.0  # type: ignore[misc]


# --- YAML + overrides ----------------------------------------------------------------------------


def test_yaml_and_overrides_merge_override_wins(tmp_path):
    path = write_yaml(tmp_path, """
workdir: runs/yaml
train:
  max_steps: 10
  lr: 0.0001
  batch_size: 8
model:
  embed_dim: 128
""")
    job = load_config(PretrainJob, path, ["--train.max_steps=20", "data.image_size=64", "--workdir=runs/cli"])
    assert job.train.max_steps == 20  # override beats YAML
    assert job.workdir == "runs/cli"  # override beats YAML at the top level too
    assert job.train.lr == 0.0001  # YAML value kept where not overridden
    assert job.train.batch_size == 8
    assert job.model.embed_dim == 128
    assert job.data.image_size == 64  # override of a section absent from YAML
    # untouched keys keep their defaults
    assert job.train.head_lr == 1e-3
    assert job.model.text_encoder == "minilm"
    assert job.data.catalog == SAMPLE_CATALOG


def test_yaml_only(tmp_path):
    path = write_yaml(tmp_path, "train:\n  max_steps: 7\n  learn_temperature: false\nserve:\n  port: 9001\n")
    job = load_config(DemoJob, path)
    assert job.train.max_steps == 7
    assert job.train.learn_temperature is False
    assert job.serve.port == 9001


def test_empty_yaml_file_gives_defaults(tmp_path):
    path = write_yaml(tmp_path, "")
    assert load_config(PretrainJob, path) == PretrainJob()


def test_int_given_to_float_field_becomes_float():
    job = load_config(PretrainJob, overrides=["--train.temperature=1"])
    assert job.train.temperature == 1.0
    assert isinstance(job.train.temperature, float)


def test_bool_strings_accepted():
    def load(override: str) -> PretrainJob:
        return load_config(PretrainJob, overrides=[override])

    assert load("--train.learn_temperature=no").train.learn_temperature is False
    assert load("--train.learn_temperature=TRUE").train.learn_temperature is True
    assert load("--train.learn_temperature=yes").train.learn_temperature is True
    assert load("--model.modal_adaptation=false").model.modal_adaptation is False


def test_string_field_accepts_number_as_string():
    assert load_config(PretrainJob, overrides=["--workdir=123"]).workdir == "123"


def test_later_override_wins_over_earlier():
    job = load_config(PretrainJob, overrides=["--train.max_steps=5", "--train.max_steps=9"])
    assert job.train.max_steps == 9


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, key", [
    ("--train.nope=1", "train.nope"),
    ("--nope=1", "nope"),
    ("--index.factory=HNSW32", "index"),  # PretrainJob has no index section
])
def test_unknown_key_raises_config_error_naming_it(override, key):
    with pytest.raises(ConfigError, match=rf"unknown config key '{key}'"):
        load_config(PretrainJob, overrides=[override])


def test_unknown_key_in_yaml_names_key_and_valid_keys(tmp_path):
    path = write_yaml(tmp_path, "model:\n  embed_dims: 128\n")
    with pytest.raises(ConfigError) as info:
        load_config(PretrainJob, path)
    msg = str(info.value)
    assert "unknown config key 'model.embed_dims'" in msg
    assert "embed_dim" in msg.split("valid keys here:")[1]


@pytest.mark.parametrize("override, key, expected", [
    ("--train.max_steps=abc", "train.max_steps", "must be an integer"),
    ("--train.max_steps=1.5", "train.max_steps", "must be an integer"),
    ("--train.max_steps=true", "train.max_steps", "must be an integer"),
    ("--train.learn_temperature=maybe", "train.learn_temperature", "must be true or false"),
    ("--train.lr=abc", "train.lr", "must be a number"),
    ("--train.lr=false", "train.lr", "must be a number"),
    ("--model.text_encoder=[a, b]", "model.text_encoder", "must be a string"),
    ("--train=5", "train", "must be a mapping of TrainConfig fields"),
])
def test_wrong_types_raise_config_error(override, key, expected):
    with pytest.raises(ConfigError) as info:
        load_config(PretrainJob, overrides=[override])
    assert f"config key '{key}' {expected}" in str(info.value)


def test_wrong_type_in_yaml(tmp_path):
    path = write_yaml(tmp_path, "data:\n  image_size: big\n")
    with pytest.raises(ConfigError, match=r"config key 'data.image_size' must be an integer, got 'big'"):
        load_config(PretrainJob, path)


def test_config_error_is_a_vitrine_and_value_error():
    with pytest.raises(VitrineError):
        load_config(PretrainJob, overrides=["--train.nope=1"])
    with pytest.raises(ValueError):
        load_config(PretrainJob, overrides=["--train.nope=1"])


def test_missing_config_file(tmp_path):
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="absent.yaml' does not exist"):
        load_config(PretrainJob, str(missing))


def test_invalid_yaml_file(tmp_path):
    path = write_yaml(tmp_path, "train: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(PretrainJob, path)


def test_yaml_top_level_must_be_mapping(tmp_path):
    path = write_yaml(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping at the top level"):
        load_config(PretrainJob, path)


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match=r"override '--train.lr' must look like --section.key=value"):
        load_config(PretrainJob, overrides=["--train.lr"])


def test_conflicting_overrides():
    with pytest.raises(ConfigError, match="conflicts with an earlier override of 'train'"):
        parse_overrides(["--train=5", "--train.lr=0.1"])


# --- dict and tuple fields -----------------------------------------------------------------------


def test_search_params_nested_dict_from_yaml_and_override(tmp_path):
    path = write_yaml(tmp_path, "index:\n  factory: IVF16,Flat\n  search_params:\n    nprobe: 8\n")
    job = load_config(IndexJob, path)
    assert job.index.factory == "IVF16,Flat"
    assert job.index.search_params == {"nprobe": 8}
    merged = load_config(IndexJob, path, ["--index.search_params.efSearch=64"])
    assert merged.index.search_params == {"nprobe": 8, "efSearch": 64}
    replaced = load_config(IndexJob, path, ["--index.search_params.nprobe=32"])
    assert replaced.index.search_params == {"nprobe": 32}
    flow = load_config(IndexJob, overrides=["--index.search_params={efSearch: 128}"])
    assert flow.index.search_params == {"efSearch": 128}


def test_search_params_must_be_mapping():
    with pytest.raises(ConfigError, match="config key 'index.search_params' must be a mapping"):
        load_config(IndexJob, overrides=["--index.search_params=16"])


def test_demo_queries_tuple_from_yaml_list(tmp_path):
    path = write_yaml(tmp_path, "queries:\n  - red shoes\n  - blue jeans\n  - 42\n")
    job = load_config(DemoJob, path)
    assert job.queries == ("red shoes", "blue jeans", "42")
    assert isinstance(job.queries, tuple)


def test_demo_queries_single_string_becomes_one_tuple():
    assert load_config(DemoJob, overrides=["--queries=black bag"]).queries == ("black bag",)


def test_demo_queries_rejects_mapping():
    with pytest.raises(ConfigError, match="config key 'queries' must be a list"):
        from_dict(DemoJob, {"queries": {"a": 1}})


# --- flatten ---------------------------------------------------------------------------------------


def test_flatten_gives_dotted_keys():
    flat = flatten(PretrainJob())
    assert flat["train.lr"] == 3e-5
    assert flat["train.max_steps"] == 60
    assert flat["model.embed_dim"] == 256
    assert flat["data.catalog"] == SAMPLE_CATALOG
    assert flat["workdir"] == "runs"
    assert "train" not in flat
    assert all(not isinstance(v, dict) for v in flat.values())
    # every dataclass field appears once, under its section
    expected = {"workdir"} | {
        f"{section}.{f.name}"
        for section in ("data", "model", "train", "loss", "tracking")
        for f in dataclasses.fields(getattr(PretrainJob(), section))
    }
    assert set(flat) == expected


def test_flatten_search_params():
    assert flatten(IndexJob())["index.search_params"] == {}
    job = load_config(IndexJob, overrides=["--index.search_params.nprobe=16"])
    flat = flatten(job)
    assert flat["index.search_params.nprobe"] == 16
    assert "index.search_params" not in flat


def test_flatten_round_trips_through_overrides():
    job = load_config(PretrainJob, overrides=["--train.max_steps=12", "--model.embed_dim=64"])
    flat = flatten(job)
    rebuilt = load_config(PretrainJob, overrides=[f"--{k}={v}" for k, v in flat.items()
                                                  if k in ("train.max_steps", "model.embed_dim", "workdir")])
    assert rebuilt.train.max_steps == 12
    assert rebuilt.model.embed_dim == 64


# --- known bugs ------------------------------------------------------------------------------------


def test_float_override_in_exponent_notation():
    assert load_config(PretrainJob, overrides=["--train.lr=1e-4"]).train.lr == 1e-4


def test_use_gpu_false_override():
    assert load_config(PretrainJob, overrides=["--train.use_gpu=false"]).train.use_gpu == "false"


def test_every_shipped_ablation_and_recipe_is_a_valid_job():
    """Each configs/ablations/*.yaml on top of each recipe is a PretrainJob (a typo'd key would be refused)."""
    from pathlib import Path

    from pipelines.report import variant_job
    from vitrine.config import ReportJob

    configs = Path(__file__).resolve().parents[2] / "configs"
    names = sorted(p.stem for p in (configs / "ablations").glob("*.yaml"))
    assert {"full", "no_modal_adaptation", "modal_balanced_init", "text_only"} <= set(names)
    for recipe in sorted((configs / "recipes").glob("*.yaml")):
        for name in names:
            job = variant_job(ReportJob(recipe=str(recipe), ablation_dir=str(configs / "ablations")), name)
            assert job.tracking.model_name.endswith(f"-{name}")
    balanced = variant_job(ReportJob(ablation_dir=str(configs / "ablations")), "modal_balanced_init")
    assert balanced.model.modal_init_image_weight == 0.5


def test_ablations_change_full_not_the_tuned_recipe():
    """Every ablation is full.yaml plus its one change, whatever the recipe tunes; ``recipe`` is the recipe as is."""
    from pathlib import Path

    from pipelines.report import variant_job
    from vitrine.config import ReportJob

    configs = Path(__file__).resolve().parents[2] / "configs"
    job = ReportJob(recipe=str(configs / "recipes" / "myntra.yaml"), ablation_dir=str(configs / "ablations"))
    full, no_ke = variant_job(job, "full"), variant_job(job, "no_keyword_enhancement")
    assert (full.loss.memory_bank, full.model.modal_init_image_weight) == (256, 0.12)  # recipe: 0 and 0.5
    assert (no_ke.loss.memory_bank, no_ke.loss.keyword_enhancement) == (256, False)
    assert variant_job(job, "no_memory_bank").loss.memory_bank == 0
    tuned = variant_job(job, "recipe")
    assert (tuned.loss.memory_bank, tuned.model.modal_init_image_weight) == (0, 0.5)
    assert tuned.tracking.model_name == "vitrine-myntra-recipe" and tuned.train.max_steps == job.max_steps


def test_text_settings_keep_the_text_as_typed():
    job = load_config(EvaluateJob, overrides=["--output=0100", "--model=hybrid:", "--catalog=2024-01-01",
                                              "--judgments=1e3", "--run_output=yes"])
    assert (job.output, job.model, job.catalog, job.judgments, job.run_output) == (
        "0100", "hybrid:", "2024-01-01", "1e3", "yes")
    assert load_config(EvaluateJob, overrides=["--k=0100"]).k == 100  # typed settings still read YAML
    with pytest.raises(ConfigError, match="must be a string"):  # a list written out is not text
        load_config(EvaluateJob, overrides=["--model=[a, b]"])
