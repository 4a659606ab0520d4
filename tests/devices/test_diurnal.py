"""Diurnal availability: vectorized, deterministic, the right share at the right local hours."""

from __future__ import annotations

import numpy as np
import pytest

from fedactors.devices.availability import Diurnal, in_window, local_hours
from fedactors.devices.distributions import Uniform
from fedactors.devices.fleet import Fleet
from fedactors.devices.profile import DeviceClass
from fedactors.errors import ConfigError
from fedactors.seeding import SeedTree

H = 3600.0


def test_window_wraps_past_midnight() -> None:
    hours = np.array([21.99, 22.0, 23.5, 0.0, 5.99, 6.0, 12.0])
    np.testing.assert_array_equal(in_window(hours, 22.0, 8.0),
                                  [False, True, True, True, True, False, False])
    np.testing.assert_array_equal(local_hours(20 * H, np.array([0.0, 2.0, 5.0, -21.0])),
                                  [20.0, 22.0, 1.0, 23.0])


def test_each_device_is_online_exactly_in_its_own_local_window() -> None:
    # share 1 in the window, 0 outside: the mask is the window, device by device.
    model = Diurnal(window_start_h=22, window_hours=8, share_in_window=1.0, share_outside=0.0)
    offsets = np.array([-8.0, -5.0, 0.0, 1.0, 3.0, 9.0])
    devices = np.arange(len(offsets))
    rng = np.random.default_rng(0)
    for t_h in range(0, 48, 1):
        got = model.online_profiled(t_h * H, devices, rng, offsets)
        local = np.mod(t_h + offsets, 24)
        expected = (local >= 22) | (local < 6)
        np.testing.assert_array_equal(got, expected, err_msg=f"UTC hour {t_h}")


def test_shares_in_and_out_of_the_window() -> None:
    model = Diurnal(window_start_h=22, window_hours=8, tz_offset=0.0,
                    share_in_window=0.6, share_outside=0.05)
    devices = np.arange(200_000)
    offsets = np.zeros(len(devices))
    night = model.online_profiled(2 * H, devices, np.random.default_rng(1), offsets)
    day = model.online_profiled(14 * H, devices, np.random.default_rng(2), offsets)
    assert night.dtype == bool and night.shape == devices.shape
    assert night.mean() == pytest.approx(0.6, abs=0.005)
    assert day.mean() == pytest.approx(0.05, abs=0.002)


def test_fleet_draws_time_zones_once_and_deterministically() -> None:
    cls_ = DeviceClass("phone", count=5000, availability=Diurnal(tz_offset=Uniform(-8, 3)))
    plain = DeviceClass("phone", count=5000)
    a = Fleet.build([cls_], SeedTree(7).generator("fleet"))
    b = Fleet.build([cls_], SeedTree(7).generator("fleet"))
    c = Fleet.build([plain], SeedTree(7).generator("fleet"))
    np.testing.assert_array_equal(a.availability_profiles[0], b.availability_profiles[0])
    assert a.availability_profiles[0].min() >= -8 and a.availability_profiles[0].max() <= 3
    # Time zones are drawn after every other column: those are unchanged.
    np.testing.assert_array_equal(a.compute, c.compute)
    np.testing.assert_array_equal(a.examples, c.examples)
    assert c.availability_profiles == (None,)
    # Same selection generator, same online set; the share follows the local night.
    on_a = a.online(1 * H, SeedTree(7).generator("availability", 1))
    on_b = b.online(1 * H, SeedTree(7).generator("availability", 1))
    np.testing.assert_array_equal(on_a, on_b)
    local = local_hours(1 * H, a.availability_profiles[0])
    inside = in_window(local, 22, 8)
    share_in = np.isin(np.flatnonzero(inside), on_a).mean()
    share_out = np.isin(np.flatnonzero(~inside), on_a).mean()
    assert share_in == pytest.approx(0.5, abs=0.05) and share_out < 0.05


@pytest.mark.parametrize("kwargs, field", [
    ({"window_start_h": 24}, "availability.window_start_h"),
    ({"window_hours": 0}, "availability.window_hours"),
    ({"window_hours": 30}, "availability.window_hours"),
    ({"share_in_window": 1.5}, "availability.share_in_window"),
    ({"tz_offset": -30.0}, "availability.tz_offset"),
    ({"tz_offset": "UTC"}, "availability.tz_offset"),
])
def test_bad_options_name_the_field(kwargs, field) -> None:
    with pytest.raises(ConfigError) as info:
        DeviceClass("phone", count=1, availability=Diurnal(**kwargs))
    assert info.value.field.startswith(field)
    assert repr(next(iter(kwargs.values())))[:3] in str(info.value)
