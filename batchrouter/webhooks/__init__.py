"""Outbound webhooks (SPEC §7). State changes call `batch_event` / `on_batch_created` /
`quote_event`; `delivery.pump` (an RQ job on the `webhooks` queue) sends them."""
from batchrouter.webhooks.events import batch_event, on_batch_created, quote_event

__all__ = ["batch_event", "on_batch_created", "quote_event"]
