"""All models, imported so Base.metadata knows every table (Alembic autogenerate, tests)."""
from batchrouter.db import Base
from batchrouter.models.accounts import ApiKey, Membership, User, UserSession, Workspace
from batchrouter.models.batches import Batch, Feedback, Item, Reservation, WorkUnit
from batchrouter.models.billing import CreditLot, LedgerAccount, LedgerEntry, LedgerTransaction
from batchrouter.models.catalog import CatalogModel, CatalogVersion, Offering, Provider
from batchrouter.models.files import File
from batchrouter.models.openai_compat import OpenAIBatch
from batchrouter.models.privacy import (
                                          AnalyticsEvent,
                                          AnalyticsPageView,
                                          ApiEvent,
                                          ConsentRecord,
                                          PrivacyRequest,
                                          ProcessingRestriction,
                                          RateLimitHit,
                                          RetentionRun,
                                          SupportMessage,
)
from batchrouter.models.providers import ProviderCredential
from batchrouter.models.purchases import Purchase, ReconciliationRun, StripeEvent, WorkspaceBilling
from batchrouter.models.quotes import Quote
from batchrouter.models.records import EmailMessage, ErrorReport, SecurityEvent
from batchrouter.models.system import IdempotencyRecord, OutboxMessage, PeriodicTask
from batchrouter.models.teams import Invitation
from batchrouter.models.webhooks import (
                                          WebhookAttempt,
                                          WebhookDelivery,
                                          WebhookEndpoint,
                                          WebhookEvent,
)

__all__ = [
                                          "AnalyticsEvent",
                                          "AnalyticsPageView",
                                          "ApiEvent",
                                          "ApiKey",
                                          "Base",
                                          "Batch",
                                          "CatalogModel",
                                          "CatalogVersion",
                                          "ConsentRecord",
                                          "CreditLot",
                                          "EmailMessage",
                                          "ErrorReport",
                                          "Feedback",
                                          "File",
                                          "IdempotencyRecord",
                                          "Invitation",
                                          "Item",
                                          "LedgerAccount",
                                          "LedgerEntry",
                                          "LedgerTransaction",
                                          "Membership",
                                          "Offering",
                                          "OpenAIBatch",
                                          "OutboxMessage",
                                          "PeriodicTask",
                                          "PrivacyRequest",
                                          "ProcessingRestriction",
                                          "Provider",
                                          "ProviderCredential",
                                          "Purchase",
                                          "Quote",
                                          "RateLimitHit",
                                          "ReconciliationRun",
                                          "Reservation",
                                          "RetentionRun",
                                          "SecurityEvent",
                                          "StripeEvent",
                                          "SupportMessage",
                                          "User",
                                          "UserSession",
                                          "WebhookAttempt",
                                          "WebhookDelivery",
                                          "WebhookEndpoint",
                                          "WebhookEvent",
                                          "WorkUnit",
                                          "Workspace",
                                          "WorkspaceBilling",
]
