"""provider credentials

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('provider_credentials',
    sa.Column('provider_slug', sa.String(length=40), nullable=False),
    sa.Column('api_key_encrypted', sa.Text(), nullable=True),
    sa.Column('key_last4', sa.String(length=4), nullable=False),
    sa.Column('base_url', sa.String(length=300), nullable=False),
    sa.Column('requests_per_minute', sa.Integer(), nullable=False),
    sa.Column('tokens_per_minute', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('updated_by', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['provider_slug'], ['providers.slug'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('provider_slug')
    )


def downgrade() -> None:
    op.drop_table('provider_credentials')
