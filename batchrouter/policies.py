"""Policy pages (SPEC §10, §12): operator-editable Markdown with the operator's details
filled in. A file in the operator's policy directory wins over the shipped default."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import markdown

from batchrouter.config import ROOT

DEFAULTS = ROOT / "batchrouter" / "data" / "policies"
PAGES = ("privacy", "cookies", "terms")
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")

# Who else may process personal data, by the configuration key that turns them on.
KNOWN_SUBPROCESSORS = (
    ("RESEND_API_KEY", "Resend", "sends account and privacy emails"),
    ("STRIPE_SECRET_KEY", "Stripe", "takes card payments for credit packs"),
    ("OPENAI_API_KEY", "OpenAI", "runs batch items routed to OpenAI models"),
    ("ANTHROPIC_API_KEY", "Anthropic", "runs batch items routed to Anthropic models"),
    ("OPENROUTER_API_KEY", "OpenRouter", "runs batch items routed through OpenRouter"),
)


@dataclass(frozen=True)
class Context:
    operator_name: str
    operator_email: str
    base_url: str
    policy_version: str
    subprocessors: list[tuple[str, str]]
    cookies: list[dict]
    retention: list[tuple[str, str]]


def subprocessors(cfg) -> list[tuple[str, str]]:
    """Configured services first, then the operator's own list ("Name: purpose; …")."""
    found = [(name, purpose) for key, name, purpose in KNOWN_SUBPROCESSORS if cfg.get(key)]
    for part in (cfg.get("BATCHROUTER_SUBPROCESSORS") or "").split(";"):
        name, _, purpose = part.partition(":")
        if name.strip():
            found.append((name.strip(), purpose.strip() or "—"))
    return found


def source(name: str, policy_dir: str | None) -> str:
    """The operator's file when present, else the shipped default."""
    if name not in PAGES:
        raise KeyError(name)
    custom = Path(policy_dir) / f"{name}.md" if policy_dir else None
    path = custom if custom is not None and custom.is_file() else DEFAULTS / f"{name}.md"
    return path.read_text(encoding="utf-8")


def _table(header: tuple[str, ...], rows) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _values(ctx: Context) -> dict[str, str]:
    subs = ctx.subprocessors or [("None configured", ("this installation uses no outside "
                                                      "service that receives personal data"))]
    return {
        "operator_name": ctx.operator_name, "operator_email": ctx.operator_email,
        "base_url": ctx.base_url, "policy_version": ctx.policy_version,
        "subprocessors": "\n".join(f"- **{n}** — {p}" for n, p in subs),
        "cookie_table": _table(("Cookie", "Category", "Purpose", "Lifetime"),
                               ((f"`{c['name']}`", c["category"], c["purpose"], c["lifetime"])
                                for c in ctx.cookies)),
        "retention_table": _table(("Data", "Kept for"), ctx.retention),
    }


def render(name: str, ctx: Context, policy_dir: str | None = None) -> str:
    """HTML of one policy page with {{ placeholders }} filled in (unknown ones left as is)."""
    values = _values(ctx)
    text = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)),
                            source(name, policy_dir))
    return markdown.markdown(text, extensions=["tables", "sane_lists"])
