import json
import math

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
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({"resolution": True})
    assert e.value.field == "resolution"


def test_to_dict_round_trips_through_json_and_from_dict():
    cfg = TrainConfig(dataset="synthetic", num_classes=7, lr_g=3e-4, steps=12, precision="bf16")
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert TrainConfig.from_dict({"lr_g": 1}).lr_g == 1.0  # ints accepted for float fields


def test_resolved_fills_preset_widths_and_tiny_ema_but_keeps_user_values():
    tiny = TrainConfig(dataset="digits").resolved()
    # The tiny preset as documented: ch=4 at 32px, batch 32, lr 1e-3/2e-3, EMA 0.995 from step 200.
    assert (tiny.preset, tiny.g_ch, tiny.d_ch, tiny.num_classes) == ("tiny", 4, 4, 10)
    assert (tiny.batch_size, tiny.lr_g, tiny.lr_d) == (32, 1e-3, 2e-3)
    assert (tiny.ema_decay, tiny.ema_start) == (0.995, 200)
    paper = TrainConfig(dataset="synthetic", resolution=128).resolved()
    assert (paper.preset, paper.g_ch, paper.d_ch, paper.ema_decay) == ("paper", 64, 64, 0.9999)
    mine = TrainConfig(dataset="digits", ema_start=5, g_ch=16).resolved()
    assert (mine.ema_start, mine.g_ch) == (5, 16)
    # A value the user gives is kept even when it equals another preset's value.
    explicit = TrainConfig.from_dict(
        {"dataset": "digits", "batch_size": 64, "lr_g": 1e-4}
    ).resolved()
    assert (explicit.preset, explicit.batch_size, explicit.lr_g, explicit.lr_d) == (
        "tiny",
        64,
        1e-4,
        2e-3,
    )
    assert paper.batch_size == 64 and (paper.lr_g, paper.lr_d) == (1e-4, 4e-4)
    assert TrainConfig().resolved().resolved() == TrainConfig().resolved()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("steps", True, "must be an integer (got true)"),
        ("batch_size", False, "must be an integer (got false)"),
        ("resolution", 32.0, "must be an integer (got 32.0)"),
        ("steps", 100.5, "must be an integer (got 100.5)"),
        ("download", 1, "must be true or false (got 1)"),
        ("lr_g", True, "must be a number (got true)"),
        ("lr_g", "1e-4", "must be a number (got '1e-4')"),
        ("z_dim", None, "must be an integer, not null"),  # steps may be null: from the preset
        ("steps", [1], "must be an integer (got [1])"),
        ("dataset", {"name": "digits"}, 'must be a string (got {"name": "digits"})'),
        ("dataset", ["digits"], 'must be a string (got ["digits"])'),
    ],
)
def test_wrong_json_types_are_refused_naming_the_field(field, value, message):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({field: value})
    assert (e.value.field, e.value.message) == (field, message)
    # validate() catches the same on a config built directly (no from_dict on the way).
    with pytest.raises(ConfigError) as e:
        TrainConfig(**{field: value}).validate()
    assert e.value.field == field


@pytest.mark.parametrize("field", ["lr_g", "lr_d", "beta1", "beta2", "ema_decay"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(field, value):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({field: value}).validate()
    assert e.value.field == field


@pytest.mark.parametrize(
    "field",
    [
        "z_dim",
        "batch_size",
        "steps",
        "d_steps",
        "ema_start",
        "log_every",
        "checkpoint_every",
        "sample_every",
        "eval_every",
        "eval_samples",
        "eval_reference_samples",
        "seed",
        "g_ch",
        "d_ch",
    ],
)
def test_negative_integers_are_refused(field):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({field: -1}).validate()
    assert e.value.field == field


@pytest.mark.parametrize(
    "field, value, limit",
    [
        ("steps", 2**31, 2**31 - 1),
        ("steps", 10**30, 2**31 - 1),
        ("batch_size", 2**63, 2**31 - 1),
        ("eval_samples", 10**30, 2**31 - 1),
        ("ema_start", 2**31, 2**31 - 1),
        ("seed", 2**32, 2**32 - 1),
    ],
)
def test_integers_too_large_to_store_or_seed_are_refused(field, value, limit):
    # The service keeps steps in 32-bit INTEGER columns and numpy seeds only below 2**32.
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({field: value}).validate()
    assert (e.value.field, e.value.message) == (field, f"must be <= {limit} (got {value})")


def test_largest_storable_integers_are_accepted():
    cfg = TrainConfig.from_dict({"steps": 2**31 - 1, "seed": 2**32 - 1}).validate()
    assert (cfg.steps, cfg.seed) == (2**31 - 1, 2**32 - 1)


# -- helpful messages: the closest key, JSON not Python, every field described -----------------


@pytest.mark.parametrize(
    ("key", "closest"),
    [("batchsize", "batch_size"), ("stepz", "steps"), ("BatchSize", "batch_size"),
     ("learning-rate-g", None), ("lr-d", "lr_d"), ("resolutoin", "resolution")],
)  # fmt: skip
def test_an_unknown_key_names_the_closest_known_key(key, closest):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({key: 1})
    assert e.value.field == key
    if closest is None:
        assert e.value.message == (
            f"unknown config key '{key}'; the keys are: {', '.join(TrainConfig.field_names())}"
        )
    else:
        assert e.value.message == f"unknown config key '{key}'; did you mean '{closest}'?"


def test_several_unknown_keys_are_named_each_with_its_closest_key():
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({"stepz": 1, "dataset": "digits", "batchsize": 2})
    assert e.value.field == "batchsize"  # the first, sorted
    assert e.value.message == (
        "unknown config keys 'batchsize' (did you mean 'batch_size'?), "
        "'stepz' (did you mean 'steps'?)"
    )
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({f"x{i}": i for i in range(8)} | {"k" * 100_000: 0})
    assert "and 4 more" in e.value.message and len(e.value.message) < 1000


def test_messages_show_values_as_json_not_python():
    cases = [
        (TrainConfig(dataset="digits", download=True), "download", "(got true)"),
        (TrainConfig(num_classes=[10]), "num_classes", "(got [10])"),
        (TrainConfig(preset=["tiny"]), "preset", '(got ["tiny"])'),
        (TrainConfig(z_dim=None), "z_dim", "must be an integer, not null"),
    ]
    for cfg, field, text in cases:
        with pytest.raises(ConfigError) as e:
            cfg.validate()
        assert e.value.field == field and text in e.value.message
        for python in ("None", "True", "False", "['"):
            assert python not in str(e.value)


def test_an_integer_too_large_for_a_float_field_is_refused_not_an_overflow():
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({"lr_g": 10**400})
    assert e.value.field == "lr_g"
    assert e.value.message.startswith("must be a finite number (got 1000")
    assert e.value.message.endswith("... (401 characters))")


@pytest.mark.parametrize("device", ["cuda:\u0663", "cuda:\u00b2", "cuda:", "gpu"])
def test_a_device_index_is_ascii_digits(device):
    with pytest.raises(ConfigError, match="device"):
        TrainConfig(device=device).validate()
    TrainConfig(device="cuda:12").validate()


def test_every_field_has_a_description_and_its_choices_are_the_ones_validate_takes():
    from sagan_core.config_fields import CHOICES, DESCRIPTIONS

    assert sorted(DESCRIPTIONS) == sorted(TrainConfig.field_names())
    assert all(text.strip() and "None" not in text for text in DESCRIPTIONS.values())
    assert "paper 64, tiny 32" in DESCRIPTIONS["batch_size"]  # preset defaults spelled out
    for field, choices in CHOICES.items():
        for value in choices:  # taken (a refusal may name what it needs: data_root, ...)
            try:
                TrainConfig(**{field: value, "data_root": "x"}).validate()
            except ConfigError as e:
                assert e.field != field, str(e)
        with pytest.raises(ConfigError) as e:
            TrainConfig(**{field: "x" if isinstance(choices[0], str) else 48}).validate()
        assert e.value.field == field


def test_cuda_graphs_need_the_fast_path_and_one_process():
    assert TrainConfig(cuda_graphs=True).validate().cuda_graphs is True  # path null: fast on CUDA
    with pytest.raises(ConfigError) as e:
        TrainConfig(cuda_graphs=True, path="plain").validate()
    assert e.value.field == "cuda_graphs" and "path fast" in str(e.value)
    with pytest.raises(ConfigError) as e:
        TrainConfig(cuda_graphs=True, gpus=2).validate()
    assert e.value.field == "cuda_graphs" and "one process (got gpus 2 x nodes 1)" in str(e.value)


def test_one_machine_does_not_start_a_run_of_many_nodes(tmp_path):
    from sagan_core.launch import train_distributed

    with pytest.raises(ConfigError) as e:
        train_distributed(TrainConfig(dataset="digits", nodes=2, gpus=2, device="cpu"), tmp_path)
    assert e.value.field == "nodes" and "cluster launcher" in str(e.value)
