"""Metric rows: a resumed run overwrites repeated steps; reads filter and downsample."""

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store import jobs
from store.metrics import downsample, read_metrics, write_metrics
from store.models import Metric


@pytest.fixture
def session_and_job(session: Session):
    job, _ = jobs.create_job(session, owner="ann", kind="train", config={}, total_steps=10)
    session.commit()
    return session, job.id


def test_repeated_step_overwrites_instead_of_duplicating(session_and_job):
    session, job_id = session_and_job
    write_metrics(session, job_id, [("d_loss", 10, 1.0), ("d_loss", 20, 2.0)])
    write_metrics(session, job_id, [("d_loss", 20, 5.0), ("d_loss", 20, 6.0)])
    session.commit()
    count = session.execute(select(func.count()).select_from(Metric)).scalar_one()
    assert count == 2
    assert read_metrics(session, job_id)["d_loss"] == [(10, 1.0), (20, 6.0)]


def test_read_filters_by_name_and_step_range(session_and_job):
    session, job_id = session_and_job
    rows = [(name, step, float(step)) for name in ("d_loss", "g_loss", "fid") for step in range(10)]
    write_metrics(session, job_id, rows)
    session.commit()
    series = read_metrics(session, job_id, names=["fid", "g_loss"], since_step=3, until_step=5)
    assert set(series) == {"fid", "g_loss"}
    assert [s for s, _ in series["fid"]] == [3, 4, 5]


def test_downsampling_keeps_at_most_max_points_with_first_and_last():
    points = [(i, float(i)) for i in range(1000)]
    kept = downsample(points, 7)
    assert len(kept) == 7
    assert kept[0] == (0, 0.0) and kept[-1] == (999, 999.0)
    assert downsample(points[:5], 7) == points[:5]
