"""Recipe configs: YAML onto typed dataclasses, command-line overrides, clear errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from hf_reid.training import (
    RESUME_LATEST,
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_recipe_args,
    save_config,
)


@dataclass
class SchedulerConfig:
    name: Literal["cosine", "multistep"] = "cosine"
    milestones: tuple[int, ...] = (30, 50)
    warmup_init_lr: float | None = None


@dataclass
class TrainConfig:
    epochs: int = 60
    lr: float = 5e-6
    normalize: bool = True
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    image_size: tuple[int, int] = (256, 128)
    lr_overrides: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")


@dataclass
class RecipeConfig:
    seed: int = 0
    dataset: str = "market1501"
    tags: list[str] = field(default_factory=list)
    output_dir: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class PathsConfig:
    data_dir: Path = Path("data")
    cache_dir: Path | None = None


@dataclass
class RequiredConfig:
    data_dir: str
    batch: int = 4


def write(tmp_path, text: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_maps_onto_nested_dataclasses_with_types(tmp_path):
    path = write(
        tmp_path,
        """
seed: 3
tags: [a, b]
train:
  epochs: 2
  lr: 1e-5          # YAML 1.1 would read this as a string
  normalize: false
  image_size: [128, 64]
  lr_overrides: {prompt: 3.5e-4}
  scheduler:
    name: multistep
    milestones: [10, 20]
""",
    )
    cfg = load_config(RecipeConfig, path)
    assert cfg.seed == 3 and cfg.tags == ["a", "b"] and cfg.dataset == "market1501"
    assert cfg.train.epochs == 2 and cfg.train.lr == 1e-5 and isinstance(cfg.train.lr, float)
    assert cfg.train.normalize is False
    assert cfg.train.image_size == (128, 64)
    assert cfg.train.lr_overrides == {"prompt": 3.5e-4}
    assert cfg.train.scheduler == SchedulerConfig(name="multistep", milestones=(10, 20))
    assert cfg.train.scheduler.warmup_init_lr is None


def test_int_is_accepted_for_float_but_not_the_reverse(tmp_path):
    assert load_config(RecipeConfig, write(tmp_path, "train: {lr: 1}")).train.lr == 1.0
    with pytest.raises(ConfigError, match=r"'train.epochs': expected int, got float 2.5"):
        load_config(RecipeConfig, write(tmp_path, "train: {epochs: 2.5}"))


def test_unknown_key_names_the_dotted_path_and_suggests(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(RecipeConfig, write(tmp_path, "train:\n  epoch: 2\n"))
    message = str(err.value)
    assert "cfg.yaml" in message
    assert "unknown key 'train.epoch'" in message
    assert "Did you mean 'train.epochs'?" in message
    with pytest.raises(
        ConfigError, match=r"unknown key 'train.scheduler.nmae'.*Did you mean 'train.scheduler.name'"
    ):
        load_config(RecipeConfig, write(tmp_path, "train: {scheduler: {nmae: cosine}}"))
    with pytest.raises(ConfigError, match=r"unknown key 'zzz'") as err:
        load_config(RecipeConfig, write(tmp_path, "zzz: 1"))
    assert "Did you mean" not in str(err.value)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("train: {epochs: '2'}", r"'train.epochs': expected int, got str '2'"),
        ("train: {normalize: yes}", r"'train.normalize': expected bool \(true/false\), got str 'yes'"),
        ("train: {normalize: 1}", r"'train.normalize': expected bool \(true/false\), got int 1"),
        ("train: {epochs: true}", r"'train.epochs': expected int, got bool True"),
        (
            "train: {scheduler: {name: step}}",
            r"'train.scheduler.name': expected one of 'cosine', 'multistep'",
        ),
        ("train: {image_size: [1, 2, 3]}", r"'train.image_size': expected list of 2 items"),
        ("train: {scheduler: {milestones: [1, x]}}", r"'train.scheduler.milestones\[1\]': expected int"),
        ("train: 3", r"section 'train' must be a mapping"),
        ("tags: a", r"'tags': expected list of str, got str 'a'"),
        ("train: {scheduler: {warmup_init_lr: low}}", r"expected float or null, got str 'low'"),
    ],
)
def test_wrong_types_name_field_expected_and_got(tmp_path, yaml_text, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(RecipeConfig, write(tmp_path, yaml_text))


def test_bad_files_and_missing_fields(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(RecipeConfig, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(RecipeConfig, write(tmp_path, "train: [1, 2"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(RecipeConfig, write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="required field 'data_dir' is missing"):
        load_config(RequiredConfig, write(tmp_path, "batch: 2"))
    with pytest.raises(ConfigError, match="section 'train': epochs must be >= 0"):
        load_config(RecipeConfig, write(tmp_path, "train: {epochs: -1}"))
    assert load_config(RecipeConfig, write(tmp_path, "")) == RecipeConfig()


def test_overrides_are_parsed_with_the_field_type(tmp_path):
    path = write(tmp_path, "train: {epochs: 5, lr: 0.1}\ndataset: duke\n")
    cfg = load_config(
        RecipeConfig,
        path,
        [
            "--train.epochs",
            "2",
            "--train.lr=3e-4",
            "--train.normalize",
            "false",
            "--dataset",
            "123",
            "--train.scheduler.milestones=[40,70]",
            "--train.scheduler.warmup_init_lr",
            "none",
            "--train.image_size",
            "[64, 32]",
            "--tags=[x]",
        ],
    )
    assert cfg.train.epochs == 2
    assert cfg.train.lr == 3e-4
    assert cfg.train.normalize is False
    assert cfg.dataset == "123"  # a str field keeps the text
    assert cfg.train.scheduler.milestones == (40, 70)
    assert cfg.train.scheduler.warmup_init_lr is None
    assert cfg.train.image_size == (64, 32)
    assert cfg.tags == ["x"]
    # later overrides win; overrides work without a file
    assert load_config(RecipeConfig, None, ["--seed", "1", "--seed=7"]).seed == 7


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["--train.epochs", "two"],
            r"override --train.epochs: field 'train.epochs': expected int, got str 'two'",
        ),
        (
            ["--train.normalize", "yes"],
            r"expected bool \(true/false\), got str 'yes'.*Booleans are true or false",
        ),
        (["--train.epoch", "2"], r"unknown key 'train.epoch'. Did you mean 'train.epochs'"),
        (["--train", "2"], r"'train' is a section, not a value; .*--train.epochs VALUE"),
        (["--seed.x", "2"], r"'seed' is a value of type int, not a section"),
        (["--train.epochs"], r"missing value"),
        (["--train.epochs", "--seed", "1"], r"--train.epochs: missing value"),
        (["train.epochs=2"], r"Unexpected command-line argument 'train.epochs=2'"),
        (["--train.scheduler.milestones", "30,50"], r"Write lists as \[a,b,c\]"),
        (["--train.scheduler.name", "linear"], r"expected one of 'cosine', 'multistep'"),
    ],
)
def test_bad_overrides_are_clear(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(RecipeConfig, None, overrides)


def test_save_config_round_trips(tmp_path):
    cfg = load_config(
        RecipeConfig,
        None,
        ["--train.lr=1e-7", "--train.scheduler.warmup_init_lr=1e-5", "--tags=[yes, 'no']", "--dataset=true"],
    )
    assert cfg.tags == ["yes", "no"] and cfg.dataset == "true"
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    assert load_config(RecipeConfig, out) == cfg
    plain = config_to_dict(cfg)
    assert plain["train"]["image_size"] == [256, 128]
    assert config_from_dict(RecipeConfig, plain) == cfg


def test_parse_recipe_args(tmp_path):
    path = write(tmp_path, "train: {epochs: 9}")
    cfg, args = parse_recipe_args(
        RecipeConfig,
        ["--config", str(path), "--output_dir", str(tmp_path / "out"), "--train.epochs", "2", "--resume"],
    )
    assert cfg.train.epochs == 2
    assert cfg.output_dir == str(tmp_path / "out") and args.output_dir == cfg.output_dir
    assert args.resume == RESUME_LATEST and args.config == str(path)
    assert args.push_to_hub is False and args.hub_model_id is None
    assert args.overrides == ["--train.epochs", "2"]

    _, args = parse_recipe_args(
        RecipeConfig,
        [
            "--output_dir=o",
            "--resume=o/checkpoints/checkpoint-10",
            "--push_to_hub",
            "--hub_model_id",
            "org/m",
        ],
    )
    assert args.resume == "o/checkpoints/checkpoint-10"
    assert args.push_to_hub is True and args.hub_model_id == "org/m"
    _, args = parse_recipe_args(RecipeConfig, ["--output_dir", "o"])
    assert args.resume is None

    @dataclass
    class NoOutputField:
        seed: int = 0

    with pytest.raises(ConfigError, match="--output_dir"):
        parse_recipe_args(NoOutputField, ["--seed", "1"])
    cfg, args = parse_recipe_args(NoOutputField, ["--seed", "1", "--output_dir", "x"])
    assert cfg.seed == 1 and args.output_dir == "x"
    assert not any(f.name == "output_dir" for f in dataclasses.fields(cfg))


def test_path_fields(tmp_path):
    cfg = load_config(PathsConfig, write(tmp_path, "data_dir: /data/market"), ["--cache_dir", "cache"])
    assert cfg.data_dir == Path("/data/market") and cfg.cache_dir == Path("cache")
    assert load_config(PathsConfig, None, ["--cache_dir=null"]).cache_dir is None
    with pytest.raises(ConfigError, match="'data_dir': expected Path, got int 3"):
        load_config(PathsConfig, write(tmp_path, "data_dir: 3"))
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(PathsConfig, tmp_path / "saved.yaml") == cfg
