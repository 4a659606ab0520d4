"""A generative model of household sensor windows for activity recognition.

Why synthetic: real smart-home data is exactly what federated learning exists
to keep private, so the simulator ships a documented model whose non-IID
structure is known and tunable instead (see docs/data.md for the equations).

One example is a window of readings from one device. It is generated in four
layers, each a source of heterogeneity a real fleet has:

1. **Activity** ``a`` (the label) is drawn from the *household's* routine
   ``pi_h ~ Dirichlet(routine_concentration * BASE_PRIOR)``: label skew.
2. **Signature**: every activity has a mean and spread per sensor, plus a
   shared "intensity" factor that moves the sensors it drives together
   (vigorous cooking is hotter, louder *and* draws more power): a full
   covariance, not just a diagonal one.
3. **Household**: a warmer or cooler thermostat, brighter or dimmer rooms,
   more appliances, a noisier street, an earlier or later schedule: feature
   shift that is shared by all devices of one home.
4. **Device kind**: a thermostat never hears, a speaker never sees; each kind
   observes only its own sensors, with its own noise. Unobserved features are
   0 after standardization (mean imputation): feature skew.

Features are standardized with fixed constants of the model (:data:`CENTER`,
:data:`SCALE`), never with statistics of anyone's data, so nothing about a
device leaks into how another device's inputs are scaled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedactors.data.federated import FederatedData
from fedactors.errors import ConfigError
from fedactors.validation import positive, positive_int

ACTIVITIES: tuple[str, ...] = (
    "sleeping",
    "cooking",
    "away",
    "watching_tv",
    "showering",
    "working",
    "exercising",
)

DEVICE_KINDS: tuple[str, ...] = (
    "hub",
    "camera",
    "speaker",
    "thermostat",
    "plug",
    "door_sensor",
)

FEATURES: tuple[str, ...] = (
    "temperature_c",
    "humidity_pct",
    "co2_ppm",
    "log_light_lux",  # log1p(lux): light spans 0 to 1000s, logs make it near Gaussian
    "motion_events",
    "people_in_view",
    "screen_flicker",
    "sound_db",
    "sound_low_db",
    "sound_mid_db",
    "sound_high_db",
    "log_power_w",  # log1p(watts), same reason as light
    "door_events",
    "hvac_duty",
    "hour_sin",
    "hour_cos",
)
NUM_FEATURES = len(FEATURES)
_F = {name: i for i, name in enumerate(FEATURES)}

#: Population share of time in each activity; households deviate from it.
BASE_PRIOR = np.array([0.30, 0.10, 0.20, 0.12, 0.05, 0.15, 0.08])

# Per activity (rows, ACTIVITIES order) the mean of each physical sensor
# (columns, FEATURES[:14] order). Counts (motion, people, door) are Poisson
# rates; the rest are Gaussian means. Values are plausible, not measured.
_MEAN = np.array(
    [
        # temp  hum  co2   lux  mot  ppl  flick  snd  low  mid  high  pow  door  hvac
        [19.0, 45, 900, 1.1, 0.5, 0.1, 0.02, 28, 20, 15, 10, 4.1, 0.05, 0.30],  # sleeping
        [23.0, 55, 800, 5.9, 8.0, 1.2, 0.10, 58, 40, 50, 48, 7.3, 1.50, 0.10],  # cooking
        [18.0, 42, 450, 3.4, 0.2, 0.02, 0.00, 30, 22, 18, 12, 3.7, 0.10, 0.05],  # away
        [21.0, 45, 750, 4.1, 1.5, 1.8, 0.80, 60, 52, 55, 40, 5.2, 0.20, 0.35],  # watching_tv
        [22.5, 70, 650, 5.7, 4.0, 0.1, 0.05, 62, 45, 50, 58, 5.7, 0.60, 0.20],  # showering
        [21.0, 44, 850, 6.0, 2.0, 0.9, 0.35, 42, 30, 42, 25, 5.0, 0.30, 0.40],  # working
        [21.5, 50, 1000, 5.5, 14.0, 1.0, 0.40, 65, 58, 50, 42, 4.8, 0.50, 0.60],  # exercising
    ]
)
# Within-activity spread of each Gaussian sensor (counts get Poisson spread).
_SPREAD = np.array([1.2, 6.0, 150, 0.8, 0, 0, 0.15, 7, 7, 7, 7, 0.6, 0, 0.15])
_COUNTS = (_F["motion_events"], _F["people_in_view"], _F["door_events"])
#: Correlation the intensity factor induces among the sensors an activity drives.
INTENSITY_CORRELATION = 0.6
# Sensors each activity's intensity drives (1 = driven); the rest vary independently.
_DRIVES = np.array(
    [
        [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # sleeping: more sleepers, more CO2
        [1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0],  # cooking
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # away
        [0, 0, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0],  # watching_tv: louder, brighter screen
        [1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0],  # showering: hotter water
        [0, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0],  # working
        [1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1],  # exercising
    ],
    dtype=float,
)
#: Typical hour of each activity and its spread in hours (a wrapped normal).
_HOUR = np.array([2.0, 18.5, 13.0, 21.0, 7.5, 11.0, 17.0])
_HOUR_SPREAD = np.array([2.5, 2.5, 3.0, 1.5, 2.0, 2.5, 3.0])

# Spread of each household's offsets from the population.
_HOME_TEMP_SD = 1.5  # degrees C: thermostat preference
_HOME_HUMIDITY_SD = 5.0  # percent: climate, ventilation
_HOME_LIGHT_SD = 0.4  # log lux: window size, bulbs
_HOME_POWER_SD = 0.3  # log watts: appliance fleet
_HOME_SOUND_SD = 4.0  # dB: street noise, room acoustics
_HOME_HOUR_SD = 1.5  # hours: early riser or night owl
_HOME_ACTIVITY_SD = 0.3  # log-scale factor on motion/people/door rates: household size

# Which features each device kind observes (time-of-day: every device has a clock).
_OBSERVES: dict[str, tuple[str, ...]] = {
    "hub": ("temperature_c", "humidity_pct", "co2_ppm", "log_light_lux", "motion_events"),
    "camera": ("log_light_lux", "motion_events", "people_in_view", "screen_flicker"),
    "speaker": ("sound_db", "sound_low_db", "sound_mid_db", "sound_high_db"),
    "thermostat": ("temperature_c", "humidity_pct", "motion_events", "hvac_duty"),
    "plug": ("log_power_w",),
    "door_sensor": ("door_events", "motion_events"),
}
#: Extra measurement noise per kind, in units of the feature's SCALE.
KIND_NOISE: dict[str, float] = {
    "hub": 0.3,
    "camera": 0.4,
    "speaker": 0.3,
    "thermostat": 0.2,
    "plug": 0.15,
    "door_sensor": 0.2,
}
_MASK = {
    kind: np.isin(np.array(FEATURES), names + ("hour_sin", "hour_cos"))
    for kind, names in _OBSERVES.items()
}

#: Fixed standardization constants, part of the model rather than estimated from
#: data (so scaling leaks nothing). Roughly the population mean and spread.
CENTER = np.array([20.5, 48, 720, 3.8, 3.0, 0.7, 0.2, 42, 33, 32, 26, 4.9, 0.35, 0.28, 0, 0])
SCALE = np.array([2.2, 9.0, 230, 2.0, 4.0, 0.9, 0.3, 15, 14, 16, 16, 1.2, 0.6, 0.2, 0.7, 0.7])

#: Fresh households the server's test set is drawn from.
TEST_HOUSEHOLDS = 64


def _draw_households(count: int, concentration: float, rng: np.random.Generator) -> dict:
    """Routine and sensor offsets of ``count`` households, as arrays with one row a home."""
    return {
        "prior": rng.dirichlet(concentration * BASE_PRIOR, size=count),
        "temp": rng.normal(0.0, _HOME_TEMP_SD, count),
        "humidity": rng.normal(0.0, _HOME_HUMIDITY_SD, count),
        "light": rng.normal(0.0, _HOME_LIGHT_SD, count),
        "power": rng.normal(0.0, _HOME_POWER_SD, count),
        "sound": rng.normal(0.0, _HOME_SOUND_SD, count),
        "hour": rng.normal(0.0, _HOME_HOUR_SD, count),
        "activity": np.exp(rng.normal(0.0, _HOME_ACTIVITY_SD, count)),
    }


def _draw_windows(
    homes: dict, home: np.ndarray, kind: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One standardized window per row: ``home[j]`` indexes ``homes``, ``kind[j]`` DEVICE_KINDS."""
    n = len(home)
    # Label from the household routine (inverse-CDF on each row's own prior).
    cdf = np.cumsum(homes["prior"][home], axis=1)
    y = np.minimum((rng.random(n)[:, None] > cdf).sum(axis=1), len(ACTIVITIES) - 1)

    # Gaussian sensors: mean + spread * (independent part + shared intensity part).
    rho = INTENSITY_CORRELATION
    drives = _DRIVES[y]
    eps = rng.standard_normal((n, len(_SPREAD)))
    z = rng.standard_normal((n, 1))
    mix = np.where(drives > 0, np.sqrt(1 - rho**2) * eps + rho * z, eps)
    raw = _MEAN[y] + _SPREAD * mix

    # Household shifts, shared by every device in the home.
    raw[:, _F["temperature_c"]] += homes["temp"][home]
    raw[:, _F["humidity_pct"]] += homes["humidity"][home]
    raw[:, _F["log_light_lux"]] += homes["light"][home]
    raw[:, _F["log_power_w"]] += homes["power"][home]
    for band in ("sound_db", "sound_low_db", "sound_mid_db", "sound_high_db"):
        raw[:, _F[band]] += homes["sound"][home]
    raw[:, _F["screen_flicker"]] = np.clip(raw[:, _F["screen_flicker"]], 0.0, 1.0)
    raw[:, _F["hvac_duty"]] = np.clip(raw[:, _F["hvac_duty"]], 0.0, 1.0)
    # Counts: Poisson, busier households (more people) move more.
    for f in _COUNTS:
        raw[:, f] = rng.poisson(_MEAN[y, f] * homes["activity"][home])

    hours = _HOUR[y] + homes["hour"][home] + _HOUR_SPREAD[y] * rng.standard_normal(n)
    angle = 2.0 * np.pi * hours / 24.0
    x = np.empty((n, NUM_FEATURES))
    x[:, : len(_SPREAD)] = raw
    x[:, _F["hour_sin"]] = np.sin(angle)
    x[:, _F["hour_cos"]] = np.cos(angle)
    x = (x - CENTER) / SCALE

    # The device kind: its own sensor noise, and zeros for what it cannot sense.
    kinds = np.array(DEVICE_KINDS)[kind]
    noise = np.array([KIND_NOISE[k] for k in DEVICE_KINDS])[kind]
    x += noise[:, None] * rng.standard_normal(x.shape)
    mask = np.stack([_MASK[k] for k in kinds]) if n else np.zeros((0, NUM_FEATURES), bool)
    x = np.where(mask, x, 0.0)
    return x.astype(np.float32), y.astype(np.int32)


def make_smart_home_data(
    kinds: Sequence[str],
    households: Sequence[int],
    examples: Sequence[int],
    rng: np.random.Generator,
    test_size: int = 2000,
    *,
    routine_concentration: float = 4.0,
) -> FederatedData:
    """Activity-recognition data for a fleet: device ``i`` is a ``kinds[i]`` in
    household ``households[i]`` holding ``examples[i]`` windows.

    Devices with the same household id share that home's routine and offsets.
    The server's test set is ``test_size`` windows from ``TEST_HOUSEHOLDS``
    fresh households, each from a device kind drawn with the fleet's own kind
    mix, so it measures how the global model serves a *new* home's devices.
    Lower ``routine_concentration`` makes households' label mixes more skewed.
    Every draw comes from ``rng``: the same generator state gives the same data.

    Args:
        kinds: Each device's kind, one of ``DEVICE_KINDS`` (``"hub"``,
            ``"camera"``, ``"speaker"``, ``"thermostat"``, ``"plug"``,
            ``"door_sensor"``); in a scenario, ``fleet.kinds`` when the device
            classes are named after kinds. Its length is the number of devices.
        households: Each device's household id, any whole number; devices with
            the same id share that home's routine and sensor offsets.
        examples: Each device's number of windows (examples), >= 1; in a
            scenario, usually ``fleet.examples``.
        rng: The ``numpy.random.Generator`` every draw comes from.
        test_size: Number of windows in the server's test set, >= 1.
            Default 2000.
        routine_concentration: Keyword-only Dirichlet concentration (> 0) of
            each household's activity mix around ``BASE_PRIOR``: about 1 lets a
            few activities dominate each home, about 100 is nearly IID.
            Default 4.0.

    Returns:
        One device per entry of ``kinds``; ``x`` is float32 of shape
            ``(examples, 16)``, the standardized ``FEATURES`` (0 where the
            device's kind cannot sense), and ``y`` is int32, an index into
            ``ACTIVITIES``.

    Raises:
        ConfigError: For a bad option, or lists of different lengths.

    Examples:
        >>> import numpy as np
        >>> from fedactors import DeviceClass, Fleet
        >>> from fedactors.data import make_smart_home_data
        >>> fleet = Fleet.build([DeviceClass("hub", count=2, examples=30),
        ...                      DeviceClass("plug", count=2, examples=50)],
        ...                     np.random.default_rng(0))
        >>> data = make_smart_home_data(fleet.kinds, [0, 1, 0, 1], fleet.examples,
        ...                             np.random.default_rng(0), test_size=100)
        >>> data.num_devices, data.num_examples(3), data.feature_shape, len(data.test[0])
        (4, 50, (16,), 100)
        >>> x, y = data.client(2)  # a plug senses only its power draw, plus the clock
        >>> int((x[0] != 0).sum())
        3
    """
    if not isinstance(rng, np.random.Generator):
        raise ConfigError("rng", f"must be a numpy Generator, got {type(rng).__name__}")
    n = len(kinds)
    if n == 0:
        raise ConfigError("kinds", "must name at least 1 device, got 0")
    if len(households) != n or len(examples) != n:
        raise ConfigError(
            "households",
            f"kinds, households and examples must have one entry per device; "
            f"got {n}, {len(households)} and {len(examples)}",
        )
    for i, k in enumerate(kinds):
        if k not in DEVICE_KINDS:
            raise ConfigError(f"kinds[{i}]", f"must be one of {DEVICE_KINDS}, got {k!r}")
    counts = [positive_int(f"examples[{i}]", e) for i, e in enumerate(examples)]
    for i, h in enumerate(households):
        if isinstance(h, bool) or not hasattr(h, "__index__"):
            raise ConfigError(f"households[{i}]", f"must be a whole number, got {h!r}")
    test_size = positive_int("test_size", test_size)
    concentration = positive("routine_concentration", routine_concentration)

    # Homes are drawn in sorted id order so a home's routine does not depend
    # on which of its devices happens to be listed first.
    ids = sorted({int(h) for h in households})
    homes = _draw_households(len(ids), concentration, rng)
    row = {h: j for j, h in enumerate(ids)}
    kind_index = np.array([DEVICE_KINDS.index(k) for k in kinds])

    clients = []
    for i in range(n):
        home = np.full(counts[i], row[int(households[i])])
        kind = np.full(counts[i], kind_index[i])
        clients.append(_draw_windows(homes, home, kind, rng))

    test_homes = _draw_households(TEST_HOUSEHOLDS, concentration, rng)
    fleet_mix = np.bincount(kind_index, minlength=len(DEVICE_KINDS)) / n
    test = _draw_windows(
        test_homes,
        rng.integers(0, TEST_HOUSEHOLDS, test_size),
        rng.choice(len(DEVICE_KINDS), size=test_size, p=fleet_mix),
        rng,
    )
    return FederatedData.from_arrays(clients, test)
