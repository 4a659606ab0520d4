"""The cost model: prices per operation, counts per step, scaled by the device's speed."""

from __future__ import annotations

import pytest

from fedactors.errors import ConfigError
from fedactors.secagg.costs import MASK_WORD_BYTES, CryptoCosts
from fedactors.secagg.envelopes import ADVERTISE, MASKED, SHARE, SIGN, STEPS, UNMASK

CALIBRATED = CryptoCosts.calibrated()
PRICES = dict(keygen=1.0, agree=10.0, encrypt=100.0, decrypt=1000.0, share=1e4,
              reconstruct=1e5, mask_byte=1e-6, sign=1e6, verify=1e7)


def test_each_step_counts_its_operations() -> None:
    c = CryptoCosts(**PRICES)
    # Two key pairs.
    assert c.device_base_seconds(ADVERTISE, 0, 50) == 2.0
    # 4 holders, itself included: 3 agreements and bundles, 2 secrets x 4 shares.
    assert c.device_base_seconds(SHARE, 4, 50) == 3 * (10 + 100) + 8 * 1e4
    # 3 bundles: opened, 3 pairwise seeds agreed, 4 masks (3 pairwise + b_u) of 50 words.
    assert c.device_base_seconds(MASKED, 3, 50) == pytest.approx(
        3 * (1000 + 10) + 4 * 50 * MASK_WORD_BYTES * 1e-6)
    assert c.device_base_seconds(SIGN, 7, 50) == 1e6
    assert c.device_base_seconds(UNMASK, 7, 50) == 0.0
    assert c.device_base_seconds(UNMASK, 7, 50, views=3) == 3e7


def test_a_device_pays_in_proportion_to_how_slow_it_is() -> None:
    c = CryptoCosts(**PRICES, reference_compute=1000.0)
    base = c.device_base_seconds(MASKED, 5, 100)
    assert c.device_seconds(MASKED, 5, 100, compute=1000.0) == base
    assert c.device_seconds(MASKED, 5, 100, compute=250.0) == pytest.approx(4 * base)
    assert c.device_seconds(MASKED, 5, 100, compute=4000.0) == pytest.approx(base / 4)


def test_the_server_pays_for_every_reconstruction_and_every_mask_it_removes() -> None:
    c = CryptoCosts(**PRICES)
    mask = 20 * MASK_WORD_BYTES * 1e-6
    # Two survivors (t = 3, 4): rebuild b_u, expand it. One dropped device (t = 2) with
    # 5 surviving partners: rebuild s^SK, derive its key pair, agree and expand per partner.
    got = c.unmask_seconds(20, [3, 4], [(2, 5)])
    assert got == pytest.approx((3 + 4) * 1e5 + 2 * mask + 2 * 1e5 + 1.0 + 5 * (10 + mask))
    assert c.unmask_seconds(20, [], []) == 0.0


def test_free_cryptography_costs_nothing_anywhere() -> None:
    free = CryptoCosts.free()
    for step in STEPS:
        assert free.device_seconds(step, 100, 10_000, compute=1.0, views=50) == 0.0
    assert free.unmask_seconds(10_000, [5] * 10, [(5, 9)]) == 0.0


def test_the_calibration_is_real_and_every_price_positive() -> None:
    assert CryptoCosts.calibrated() == CALIBRATED
    for name in PRICES:
        assert getattr(CALIBRATED, name) > 0, name
    assert "benchmarks/secagg_costs.py" in CALIBRATED.source
    # Orders of magnitude a reader can check: an X25519 agreement costs tens of
    # microseconds, a mask byte nanoseconds (AES-CTR at GB/s).
    assert 1e-6 < CALIBRATED.agree < 1e-3
    assert 1e-11 < CALIBRATED.mask_byte < 1e-7


@pytest.mark.parametrize("field,value", [("agree", -1e-6), ("mask_byte", float("nan")),
                                         ("reference_compute", 0.0), ("sign", "fast"),
                                         # float() parses these, but they are not numbers
                                         ("agree", "0.001"), ("reference_compute", "1000"),
                                         ("verify", True), ("source", None)])
def test_a_bad_price_is_refused_naming_it(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"costs\.{field}"):
        CryptoCosts(**{field: value})


def test_an_unknown_step_is_an_error_not_free() -> None:
    with pytest.raises(ValueError, match="unknown"):
        CryptoCosts(**PRICES).device_base_seconds("masked-input", 3, 10)


def calibration_rows(costs: CryptoCosts) -> list[str]:
    """The rows docs/secure_aggregation.md shows for ``costs`` (µs, 4 significant digits)."""
    return [f"| {name} | {getattr(costs, name) * 1e6:.4g} |" for name in PRICES]


def test_the_documented_calibration_is_the_one_the_code_uses() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "secure_aggregation.md").read_text()
    table = doc.split("<!-- calibration-table")[1].split("\n\n")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "µs" not in line]
    assert rows == calibration_rows(CALIBRATED)


@pytest.mark.parametrize("field,value", [("step_timeout", "5"), ("max_dropout", "0.2"),
                                         ("scale_bits", True), ("step_dropout", False)])
def test_secure_aggregation_refuses_a_value_that_only_looks_like_a_number(field, value) -> None:
    from fedactors import SecureAggregation

    with pytest.raises(ConfigError, match=rf"secure_aggregation\.{field}"):
        SecureAggregation(**{field: value})
