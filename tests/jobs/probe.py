"""A job the tests enqueue: it records its argument in Redis so the test can see it ran."""
from jobs import runtime


def record(value: str) -> str:
    runtime.runtime().redis.rpush("probe", value)
    return value
