"""workers: live worker processes and their heartbeats

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'workers',
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('queue', sa.String(length=128), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_index('ix_workers_heartbeat_at', 'workers', ['heartbeat_at'])


def downgrade() -> None:
    op.drop_index('ix_workers_heartbeat_at', table_name='workers')
    op.drop_table('workers')
