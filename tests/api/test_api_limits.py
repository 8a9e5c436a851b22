"""Limits on a training config (issue #10): the operator's SAGAN_MAX_* bounds and data roots.

Every refusal is a 422 whose detail names the field, the value and the limit, and leaves no job.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from sagan_core.config import ConfigError, Limits, TrainConfig
from store.db import session_scope
from store.models import Job
from store.settings import Settings, get_settings

LIMITS = Limits()
# Config field -> (the default limit, the setting that changes it); config beside the field.
LIMITED = [
    ("batch_size", LIMITS.batch_size, "SAGAN_MAX_BATCH_SIZE", {}),
    ("g_ch", LIMITS.channels, "SAGAN_MAX_CHANNELS", {}),
    ("d_ch", LIMITS.channels, "SAGAN_MAX_CHANNELS", {}),
    ("z_dim", LIMITS.z_dim, "SAGAN_MAX_Z_DIM", {}),
    ("num_classes", LIMITS.classes, "SAGAN_MAX_CLASSES", {"dataset": "synthetic"}),
    ("d_steps", LIMITS.d_steps, "SAGAN_MAX_D_STEPS", {}),
    ("eval_samples", LIMITS.eval_samples, "SAGAN_MAX_EVAL_SAMPLES", {}),
    ("eval_reference_samples", LIMITS.reference_samples, "SAGAN_MAX_REFERENCE_SAMPLES", {}),
]


def _post(service, config: dict, client: TestClient | None = None):
    return (client or service.client).post("/jobs", json={"kind": "train", "config": config})


def _job_rows() -> int:
    with session_scope(get_settings()) as session:
        return session.execute(select(func.count()).select_from(Job)).scalar_one()


def _client_with(service, **settings) -> TestClient:
    """A client of an app built with other settings (`create_app(settings)`) over the same
    database, sending the fixture client's headers (so the caller is the same user)."""
    from api.app import create_app

    client = TestClient(create_app(Settings(data_dir=service.data_dir, **settings)))
    client.headers.update(service.client.headers)
    return client


def _refused(r, field: str, jobs_before: int = 0) -> str:
    """The detail of a 422 naming config.<field>; the refusal made no job."""
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"config.{field}: "), detail
    assert _job_rows() == jobs_before
    return detail


# -- numeric limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "limit", "setting", "extra"), LIMITED)
def test_value_over_the_limit_is_a_422_naming_field_value_and_limit(
    embedded, field, limit, setting, extra
):
    r = _post(embedded, {**extra, field: limit + 1})
    detail = _refused(r, field)
    assert detail == (
        f"config.{field}: must be <= {limit} (got {limit + 1}); the operator's limit is {setting}"
    )


@pytest.mark.parametrize(("field", "limit", "setting", "extra"), LIMITED)
def test_value_at_the_limit_is_valid(field, limit, setting, extra):
    cfg = TrainConfig.from_dict({**extra, field: limit}).validate().resolved().validate()
    assert getattr(cfg, field) == limit


def test_a_config_with_every_field_at_its_limit_is_accepted(embedded):
    config = {"dataset": "synthetic", "steps": 10}
    config.update({field: limit for field, limit, _, _ in LIMITED})
    r = _post(embedded, config)
    assert r.status_code == 201, r.text
    assert r.json()["config"]["batch_size"] == LIMITS.batch_size


def test_huge_values_of_2_to_31_minus_1_are_refused_by_the_operator_limit(embedded):
    # Each of these used to be accepted and would only end in an out-of-memory worker.
    for field, limit, setting, extra in LIMITED:
        r = _post(embedded, {**extra, field: 2**31 - 1})
        assert f"must be <= {limit} (got 2147483647)" in _refused(r, field)
        assert setting in r.json()["detail"]


def test_preset_filled_values_are_checked_too(embedded):
    # The preset fills batch_size (tiny, chosen for CPU workers: 32; paper: 64): over an operator
    # limit of 16 though the user gave none.
    client = _client_with(embedded, max_batch_size=16)
    r = _post(embedded, {"dataset": "synthetic", "steps": 10}, client=client)
    assert "config.batch_size: must be <= 16 (got 32)" in _refused(r, "batch_size")
    r = _post(embedded, {"dataset": "synthetic", "steps": 10, "preset": "paper"}, client=client)
    assert "config.batch_size: must be <= 16 (got 64)" in _refused(r, "batch_size")


def test_an_operator_limit_from_settings_refuses_what_the_default_allows(embedded):
    client = _client_with(embedded, max_batch_size=16, max_steps=1000)
    r = _post(embedded, {"steps": 10, "batch_size": 32}, client=client)
    assert _refused(r, "batch_size") == (
        "config.batch_size: must be <= 16 (got 32); the operator's limit is SAGAN_MAX_BATCH_SIZE"
    )
    r = _post(embedded, {"steps": 1001, "batch_size": 16}, client=client)
    assert "must be <= 1000 (got 1001); the operator's limit is SAGAN_MAX_STEPS" in _refused(
        r, "steps"
    )
    assert _post(embedded, {"steps": 1000, "batch_size": 16}, client=client).status_code == 201
    # ... and a raised limit allows what the default refuses.
    raised = _client_with(embedded, max_batch_size=4096)
    assert _post(embedded, {"steps": 10, "batch_size": 4096}, client=raised).status_code == 201


def test_limits_come_from_sagan_max_environment_variables(monkeypatch):
    monkeypatch.setenv("SAGAN_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("SAGAN_MAX_CHANNELS", "32")
    limits = Settings().limits()
    assert (limits.batch_size, limits.channels, limits.z_dim) == (16, 32, LIMITS.z_dim)
    assert Settings(max_batch_size=8).limits().batch_size == 8
    # A limit cannot be raised past what the database stores (32-bit steps) or below 1.
    for bad in ("0", str(2**31)):
        monkeypatch.setenv("SAGAN_MAX_BATCH_SIZE", bad)
        with pytest.raises(ValueError, match="max_batch_size"):
            Settings()


def test_default_limits_are_the_core_defaults():
    # ... but for GPUs, the service's bound being its largest worker pool (1 unless configured),
    # for nodes, one machine under the local launcher (SAGAN_MAX_NODES under slurm), and for what
    # a job records, which the core leaves unbounded (a benchmark runs "forever").
    expected = dataclasses.replace(Limits(), gpus=1, nodes=1, sample_grids=1_000, log_lines=100_000)
    assert Settings().limits() == expected
    assert Settings(launcher="slurm").limits().nodes == 64
    with pytest.raises(ConfigError, match="batch_size: must be <= 2048 .*SAGAN_MAX_BATCH_SIZE"):
        TrainConfig(batch_size=2049).validate()  # the core CLI gets the defaults too


# -- strings -----------------------------------------------------------------------------------


def test_a_1_mb_data_root_is_refused_without_echoing_it(embedded):
    # 10**6 characters: under the 1 MiB request-body limit, so the config check answers.
    r = _post(embedded, {"dataset": "folder", "data_root": "a" * 1_000_000})
    detail = _refused(r, "data_root")
    assert len(r.content) < 500
    assert detail == (
        "config.data_root: must be at most 1024 characters (got 1000000 characters); "
        "the operator's limit is SAGAN_MAX_DATA_ROOT_CHARS"
    )


@pytest.mark.parametrize("field", ["dataset", "device", "preset", "precision"])
def test_long_name_fields_are_refused_without_echoing_them(embedded, field):
    r = _post(embedded, {field: "x" * 100_000})
    detail = _refused(r, field)
    assert detail == f"config.{field}: must be at most 64 characters (got 100000 characters)"


def test_long_unknown_keys_and_wrong_values_are_not_echoed_whole(embedded):
    r = _post(embedded, {"k" * 100_000: 1})
    assert r.status_code == 422 and len(r.content) < 1000
    r = _post(embedded, {"steps": "s" * 100_000})
    assert "characters)" in _refused(r, "steps") and len(r.content) < 1000


# -- data locations ----------------------------------------------------------------------------


def _roots(service) -> Path:
    root = service.data_dir / "datasets"
    root.mkdir(exist_ok=True)
    return root


@pytest.mark.parametrize(
    "data_root",
    ["/etc", "/", "/etc/shadow", "../../..", "../storage", "/tmp", "datasets/../../.."],
)
def test_data_root_outside_the_data_roots_is_refused(embedded, data_root):
    root = _roots(embedded)
    detail = _refused(_post(embedded, {"dataset": "folder", "data_root": data_root}), "data_root")
    assert repr(data_root) in detail and "outside the allowed data roots" in detail
    assert str(root.resolve()) in detail and "SAGAN_DATA_ROOTS" in detail


def test_another_owners_storage_folder_and_the_data_dir_are_refused(embedded):
    _roots(embedded)
    for path in (
        embedded.data_dir / "storage" / "jobs",
        embedded.data_dir,
        embedded.data_dir / "sagan.db",
    ):
        r = _post(embedded, {"dataset": "folder", "data_root": str(path)})
        assert "outside the allowed data roots" in _refused(r, "data_root")


def test_the_service_files_are_refused_even_under_a_configured_root(embedded):
    client = _client_with(embedded, data_roots=[embedded.data_dir])
    for path in (embedded.data_dir / "storage", embedded.data_dir):
        r = _post(embedded, {"dataset": "folder", "data_root": str(path)}, client=client)
        assert "the service's own files" in _refused(r, "data_root")
    (embedded.data_dir / "images").mkdir()
    r = _post(embedded, {"dataset": "folder", "data_root": "images"}, client=client)
    assert r.status_code == 201, r.text


def test_a_symlink_inside_the_root_pointing_outside_is_refused(embedded, tmp_path):
    root = _roots(embedded)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "etc").symlink_to("/etc", target_is_directory=True)
    for data_root in (str(root / "link"), "link", "etc/shadow"):
        detail = _refused(
            _post(embedded, {"dataset": "folder", "data_root": data_root}), "data_root"
        )
        assert f"{data_root!r} resolves to " in detail and "outside the allowed" in detail


def test_data_root_inside_the_root_is_accepted_and_stored_resolved(embedded):
    folder = _roots(embedded) / "cats-and-dogs"
    folder.mkdir()
    for data_root in (str(folder), "cats-and-dogs", "./cats-and-dogs/../cats-and-dogs"):
        r = _post(embedded, {"dataset": "folder", "data_root": data_root, "steps": 10})
        assert r.status_code == 201, r.text
        # What was checked is what the worker reads: absolute, symlinks and .. resolved.
        assert r.json()["config"]["data_root"] == str(folder.resolve())


def test_a_symlink_inside_the_root_pointing_inside_it_is_accepted(embedded):
    root = _roots(embedded)
    (root / "real").mkdir()
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    r = _post(embedded, {"dataset": "folder", "data_root": "alias", "steps": 10})
    assert r.status_code == 201, r.text
    assert r.json()["config"]["data_root"] == str((root / "real").resolve())


def test_download_only_into_the_data_roots(embedded, tmp_path):
    root = _roots(embedded)
    r = _post(embedded, {"dataset": "cifar10", "data_root": str(tmp_path), "download": True})
    detail = _refused(r, "data_root")
    assert "outside the allowed data roots" in detail
    assert "download=true writes only inside these" in detail
    r = _post(embedded, {"dataset": "cifar10", "data_root": "cifar", "download": True})
    assert r.status_code == 201, r.text
    assert r.json()["config"]["data_root"] == str((root / "cifar").resolve())


@pytest.mark.parametrize("dataset", ["digits", "synthetic", "folder", "packed"])
def test_download_is_refused_for_datasets_that_do_not_download(embedded, dataset):
    _roots(embedded)
    r = _post(embedded, {"dataset": dataset, "data_root": "x", "download": True})
    assert _refused(r, "download") == (
        f"config.download: only cifar10 and cifar100 can be downloaded, not dataset "
        f"'{dataset}' (got true)"
    )


def test_data_roots_from_the_environment_json_or_comma_separated(embedded, monkeypatch, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for value in (f'["{a}", "{b}"]', f"{a},{b}", f" {a} , {b} "):
        monkeypatch.setenv("SAGAN_DATA_ROOTS", value)
        assert Settings().resolved_data_roots() == [a.resolve(), b.resolve()]
    monkeypatch.setenv("SAGAN_DATA_ROOTS", "[]")
    assert Settings().resolved_data_roots() == []
    monkeypatch.delenv("SAGAN_DATA_ROOTS")
    assert Settings().resolved_data_roots() == [(embedded.data_dir / "datasets").resolve()]

    b.mkdir()
    client = _client_with(embedded, data_roots=[a, b])
    r = _post(embedded, {"dataset": "folder", "data_root": str(b), "steps": 10}, client=client)
    assert r.status_code == 201, r.text
    # A relative data_root is taken under the first root.
    r = _post(embedded, {"dataset": "folder", "data_root": "x", "steps": 10}, client=client)
    assert r.json()["config"]["data_root"] == str(a.resolve() / "x")
    none = _client_with(embedded, data_roots=[])
    r = _post(embedded, {"dataset": "folder", "data_root": str(b)}, client=none)
    assert "no data roots are configured" in _refused(r, "data_root", jobs_before=2)


def test_a_nul_byte_in_data_root_is_refused(embedded):
    _roots(embedded)
    r = _post(embedded, {"dataset": "folder", "data_root": "a\x00b"})
    assert "contains a NUL character" in _refused(r, "data_root")


def test_configs_without_data_root_are_not_affected(embedded):
    assert not os.path.exists(embedded.data_dir / "datasets")
    r = _post(embedded, {"dataset": "digits", "steps": 10})
    assert r.status_code == 201, r.text
    assert r.json()["config"]["data_root"] is None


def test_a_job_that_would_store_unbounded_grids_or_metric_rows_is_refused(embedded) -> None:  # noqa: ANN001
    """#24: steps 2**31-1 with sample_every 1 was accepted (2 billion sample grids)."""
    client = embedded.client
    big = {"steps": 2**31 - 1, "sample_every": 1, "log_every": 2**30}
    r = client.post("/jobs", json={"kind": "train", "config": big})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "config.sample_every"
    assert "would store 2,147,483,647 grids; at most 1,000 (SAGAN_MAX_SAMPLE_GRIDS)" in r.text
    assert "sample_every >= 2,147,484" in r.text
    chatty = {"steps": 2**31 - 1, "sample_every": 0, "log_every": 1}
    r = client.post("/jobs", json={"kind": "train", "config": chatty})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "config.log_every", r.text
    assert "at most 100,000 (SAGAN_MAX_LOG_LINES)" in r.text
    # Within both: accepted (the preset's sample_every for 2,000 steps is 250: 8 grids).
    ok = client.post("/jobs", json={"kind": "train", "config": {"steps": 2000}})
    assert ok.status_code == 201, ok.text
    assert client.get("/jobs").json()["total"] == 1
