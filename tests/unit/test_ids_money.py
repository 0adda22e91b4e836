import time

import pytest

from batchrouter import ids, money


def test_ids_are_prefixed_sortable_and_unique():
    first = ids.new_id("bat")
    time.sleep(0.002)
    second = ids.new_id("bat")
    assert first.startswith("bat_") and ids.has_prefix(first, "bat")
    assert first < second
    assert len({ids.new_id("itm") for _ in range(2000)}) == 2000


def test_bulk_ids_are_base32_time_prefixed_and_distinct():
    before = ids.new_id("itm")
    time.sleep(0.002)
    bulk = ids.new_ids("itm", 50_000)
    time.sleep(0.002)
    after = ids.new_id("itm")
    assert len(set(bulk)) == 50_000
    assert all(ids.has_prefix(i, "itm") and set(i[4:]) <= set(ids._ALPHABET) for i in bulk)
    # One millisecond prefix for the whole run, ordered against ids made before and after.
    assert len({i[4:13] for i in bulk}) == 1
    assert before < min(bulk) and max(bulk) < after
    # Random digits are uniform over the alphabet (not stuck on a few values).
    assert len({i[20] for i in bulk}) == 32


def test_unknown_prefix_rejected():
    with pytest.raises(ValueError):
        ids.new_id("nope")


@pytest.mark.parametrize("micros,wire", [(0, "0.000000"), (2_413_700, "2.413700"),
                                         (-5, "-0.000005"), (100_000_000, "100.000000")])
def test_wire_format(micros, wire):
    assert money.to_wire(micros) == wire
    assert money.parse(wire, allow_negative=True) == micros


def test_parse_rejects_floats_and_precision():
    with pytest.raises(money.MoneyFormatError):
        money.parse(1.5)
    with pytest.raises(money.MoneyFormatError):
        money.parse("0.0000001")
    with pytest.raises(money.MoneyFormatError):
        money.parse("-1")
    with pytest.raises(money.MoneyFormatError):
        money.parse("NaN")


def test_display_rounds_half_up():
    assert money.to_display(1_005_000) == "$1.01"
    assert money.to_display(1_004_999) == "$1.00"
    assert money.to_display(123_456_789_000) == "$123,456.79"
