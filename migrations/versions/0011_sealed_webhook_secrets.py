"""webhook signing secrets sealed at rest: wider columns and a clear hint

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 14:50:00

A sealed secret (Fernet token with a `sealed:` prefix) is longer than the 256 characters a
secret may have, so both secret columns become TEXT. `secret_hint` keeps the last four
characters in clear for the console and API. Existing secrets stay as they are (a migration
has no SECRET_KEY to seal them with): the code reads an unprefixed value as a secret in clear
and seals it at the next rotation.
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('webhook_endpoints', schema=None) as batch_op:
        batch_op.alter_column('secret', existing_type=sa.String(length=300), type_=sa.Text(),
                              existing_nullable=False)
        batch_op.alter_column('previous_secret', existing_type=sa.String(length=300),
                              type_=sa.Text(), existing_nullable=True)
        batch_op.add_column(sa.Column('secret_hint', sa.String(length=8), nullable=False,
                                      server_default=''))
    op.execute("UPDATE webhook_endpoints SET secret_hint = substr(secret, length(secret) - 3)")


def downgrade() -> None:  # sealed secrets do not fit 300 characters: rotate them after
    with op.batch_alter_table('webhook_endpoints', schema=None) as batch_op:
        batch_op.drop_column('secret_hint')
        batch_op.alter_column('previous_secret', existing_type=sa.Text(),
                              type_=sa.String(length=300), existing_nullable=True)
        batch_op.alter_column('secret', existing_type=sa.Text(), type_=sa.String(length=300),
                              existing_nullable=False)
