"""datasets.created_at, datasets.updated_at NOT NULL, as the ORM declares them (0006 made them
nullable; found by tests/store/test_migrations.py comparing the migrations with the ORM)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    now = sa.func.now() if op.get_bind().dialect.name == "postgresql" else sa.text("CURRENT_TIMESTAMP")
    datasets = sa.table("datasets", sa.column("created_at"), sa.column("updated_at"))
    op.execute(datasets.update().where(datasets.c.created_at.is_(None)).values(created_at=now))
    op.execute(datasets.update().where(datasets.c.updated_at.is_(None)).values(updated_at=now))
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        for name in ("created_at", "updated_at"):
            batch_op.alter_column(
                name, existing_type=sa.DateTime(timezone=True), nullable=False
            )


def downgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        for name in ("created_at", "updated_at"):
            batch_op.alter_column(name, existing_type=sa.DateTime(timezone=True), nullable=True)
