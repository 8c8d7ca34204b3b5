"""Config tree: YAML + overrides fill typed dataclasses; every error names the key."""

import pytest

from framework.config import RunConfig, load_run_config
from framework.configtree import ConfigError, dump_yaml, parse_overrides


def test_defaults_and_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("seed: 7\nmodel:\n  n_layers: 3\ntrain:\n  lr: 3e-4\n")
    cfg = load_run_config(str(cfg_file), ["model.d_model=128", "train.precision=bf16", "data.paths=[a, b]"])
    assert cfg.seed == 7 and cfg.model.n_layers == 3 and cfg.model.d_model == 128
    assert cfg.train.lr == pytest.approx(3e-4)  # YAML reads 3e-4 as a string; coerced to float
    assert cfg.train.precision == "bf16" and cfg.data.paths == ["a", "b"]
    assert cfg.model.n_heads == RunConfig().model.n_heads  # defaults fill the rest


def test_single_value_where_a_list_is_expected():
    cfg = load_run_config(None, ["data.paths=prefix"])
    assert cfg.data.paths == ["prefix"]


def test_unknown_key_names_path_and_closest_name():
    with pytest.raises(ConfigError, match=r"unknown config key 'model.n_layer'; did you mean 'n_layers'"):
        load_run_config(None, ["model.n_layer=3"])


def test_unknown_key_in_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("trian:\n  steps: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'; did you mean 'train'"):
        load_run_config(str(f))


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError, match=r"'train.steps': expected int, got 'many'"):
        load_run_config(None, ["train.steps=many"])
    with pytest.raises(ConfigError, match=r"'train.precision': expected one of \['fp32', 'bf16', 'fp16'\]"):
        load_run_config(None, ["train.precision=fp8"])
    with pytest.raises(ConfigError, match=r"'parallel.sequence_parallel': expected bool"):
        load_run_config(None, ["parallel.sequence_parallel=3"])


@pytest.mark.parametrize("bad", ["model.n_layers", "=3", "model..x=1", "a.b=[1,"])
def test_bad_override_syntax(bad):
    with pytest.raises(ConfigError, match="bad override"):
        parse_overrides([bad])


def test_invalid_yaml_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("model:\n  n_layers: 2\n  d_model: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_run_config(str(f))


def test_layout_checks_name_both_numbers():
    cfg = load_run_config(None, ["train.global_batch_size=6", "train.micro_batch_size=2"])
    with pytest.raises(ConfigError, match=r"6 is not divisible by micro_batch_size x data-parallel size = 2 x 2"):
        cfg.check_layout(2)
    cfg = load_run_config(None, ["parallel.tensor=2"])
    with pytest.raises(ConfigError, match="world size 3 is not divisible"):
        cfg.check_layout(3)
    cfg = load_run_config(None, ["parallel.pipeline=2", "parallel.zero_stage=2"])
    with pytest.raises(ConfigError, match="not supported by DeepSpeed"):
        cfg.check_layout(2)


def test_base_composition_and_dump_roundtrip(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  n_layers: 5\n  d_model: 96\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nmodel:\n  d_model: 128\n")
    cfg = load_run_config(str(tmp_path / "child.yaml"))
    assert (cfg.model.n_layers, cfg.model.d_model) == (5, 128)
    (tmp_path / "dump.yaml").write_text(dump_yaml(cfg))
    assert load_run_config(str(tmp_path / "dump.yaml")) == cfg
