"""lean items: no unique index on (batch_id, customer_item_id)

Preflight already rejects duplicate customer item ids, so the index only cost every create
a fifth B-tree (about 0.1 s per 100,000 items on SQLite); the one lookup by customer id
(item feedback) reads the batch's range of the (batch_id, seq) index instead.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_constraint('uq_items_batch_id_customer_item_id', type_='unique')


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_items_batch_id_customer_item_id',
                                          ['batch_id', 'customer_item_id'])
