"""jobs.continued_from, jobs.continued_from_step: a train job continued from another job's
checkpoint (POST /jobs/<id>/continue)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("continued_from", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("continued_from_step", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("continued_from_step")
        batch_op.drop_column("continued_from")
