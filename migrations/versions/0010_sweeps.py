"""sweeps: a hyperparameter search whose trials are train jobs (jobs.sweep_id, trial_number); the
`optuna` schema in PostgreSQL, where the sweeps' Optuna studies keep their own tables

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("trials", sa.Integer(), nullable=False),
        sa.Column("parallel", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("promote", sa.String(length=64), nullable=True),
        sa.Column("best_job_id", sa.String(length=32), nullable=True),
        sa.Column("best_trial", sa.Integer(), nullable=True),
        sa.Column("best_value", sa.Float(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pokes", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sweeps_owner_created", "sweeps", ["owner", "created_at"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sweep_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("trial_number", sa.Integer(), nullable=True))
        batch.create_index("ix_jobs_sweep_id", ["sweep_id"])
        batch.create_unique_constraint("uq_jobs_sweep_trial", ["sweep_id", "trial_number"])
        batch.create_foreign_key("fk_jobs_sweep_id", "sweeps", ["sweep_id"], ["id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SCHEMA IF NOT EXISTS optuna")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SCHEMA IF EXISTS optuna CASCADE")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("fk_jobs_sweep_id", type_="foreignkey")
        batch.drop_constraint("uq_jobs_sweep_trial", type_="unique")
        batch.drop_index("ix_jobs_sweep_id")
        batch.drop_column("trial_number")
        batch.drop_column("sweep_id")
    op.drop_index("ix_sweeps_owner_created", table_name="sweeps")
    op.drop_table("sweeps")
