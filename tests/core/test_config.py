import json

import pytest

from sagan_core.config import ConfigError, TrainConfig


@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", -5),
        ("lr_g", 0.0),
        ("lr_d", -1e-4),
        ("beta1", 1.0),
        ("beta2", -0.1),
        ("dataset", "imagenet21k"),
        ("resolution", 100),
        ("batch_size", 0),
        ("precision", "fp8"),
        ("d_steps", 0),
        ("ema_decay", 1.5),
        ("preset", "huge"),
        ("device", "tpu"),
        ("g_ch", 3),
        ("num_classes", 0),
    ],
)
def test_each_bad_value_names_its_field(field, value):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({field: value}).validate()
    assert e.value.field == field
    assert str(e.value).startswith(f"{field}: ")


def test_resolution_message_lists_allowed_values():
    with pytest.raises(
        ConfigError, match=r"resolution: must be one of 32, 64, 128, 256 \(got 100\)"
    ):
        TrainConfig(resolution=100).validate()


def test_folder_without_data_root_names_data_root():
    with pytest.raises(ConfigError) as e:
        TrainConfig(dataset="folder").validate()
    assert e.value.field == "data_root"


def test_unknown_key_is_rejected_by_name():
    with pytest.raises(ConfigError, match="learning_rate") as e:
        TrainConfig.from_dict({"learning_rate": 0.1})
    assert e.value.field == "learning_rate"


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({"steps": "many"})
    assert e.value.field == "steps"
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"resolution": True})


def test_to_dict_round_trips_through_json_and_from_dict():
    cfg = TrainConfig(dataset="synthetic", num_classes=7, lr_g=3e-4, steps=12, precision="bf16")
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert TrainConfig.from_dict({"lr_g": 1}).lr_g == 1.0  # ints accepted for float fields


def test_resolved_fills_preset_widths_and_tiny_ema_but_keeps_user_values():
    tiny = TrainConfig(dataset="digits").resolved()
    assert tiny.preset == "tiny" and tiny.g_ch and tiny.num_classes == 10
    assert tiny.ema_start < 1000
    paper = TrainConfig(dataset="synthetic", resolution=128).resolved()
    assert (paper.preset, paper.g_ch, paper.d_ch, paper.ema_decay) == ("paper", 64, 64, 0.9999)
    mine = TrainConfig(dataset="digits", ema_start=5, g_ch=16).resolved()
    assert (mine.ema_start, mine.g_ch) == (5, 16)
    assert TrainConfig().resolved().resolved() == TrainConfig().resolved()
