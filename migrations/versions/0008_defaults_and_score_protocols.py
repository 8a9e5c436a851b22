"""jobs.defaults_note (what the service chose for fields a job left out, and why),
jobs.warning (the latest "not learning" warning) and score_protocols (how each evaluation's IS/FID/KID were measured)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("defaults_note", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("warning", sa.Text(), nullable=True))
    op.create_table(
        "score_protocols",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "step", name="uq_score_protocols_job_step"),
    )


def downgrade() -> None:
    op.drop_table("score_protocols")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("warning")
        batch_op.drop_column("defaults_note")
