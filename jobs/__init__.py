"""RQ job functions: plain functions that take ids (DESIGN §1)."""
