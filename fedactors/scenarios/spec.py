"""The Scenario: everything one simulated federated run needs, validated up front."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from fedactors.aggregation.base import (
    Aggregator,
    PrivateRelease,
    SkellamRelease,
    TreeRelease,
    check_privacy_forwarded,
    stage_chain,
)
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.data.federated import FederatedData
from fedactors.devices.byzantine import Byzantine
from fedactors.devices.fleet import Fleet
from fedactors.devices.profile import DeviceClass
from fedactors.errors import ConfigError, stage_label
from fedactors.privacy.spec import Privacy
from fedactors.secagg.min_inputs import check_min_inputs
from fedactors.secagg.option import SecureAggregation, check_aggregator
from fedactors.seeding import RANDOMNESS, SEEDED
from fedactors.server.fedbuff import FedBuff
from fedactors.server.optimizers import FedAvgStep, ServerOptimizer
from fedactors.server.rounds import Rounds
from fedactors.training.spec import LocalTraining

#: ``data(fleet, rng)`` returns each device's private data plus the server's test set.
DataBuilder = Callable[[Fleet, np.random.Generator], FederatedData]

#: The ``Rounds`` fields a FedBuff run does not use: refused when not at their default.
#: The Rounds fields FedBuff uses (the deadline as a per-device timeout); it refuses the
#: others set away from their defaults, so a new field is refused until FedBuff uses it.
FEDBUFF_USED_ROUNDS = ("count", "deadline", "eval_every")
FEDBUFF_UNUSED_ROUNDS = tuple(f.name for f in dataclasses.fields(Rounds)
                              if f.name not in FEDBUFF_USED_ROUNDS)


def _is_dp_mean(stage: Aggregator) -> bool:
    """Whether ``stage`` is a central-noise DP-FedAvg mechanism (``DPMean.fixed``/``adaptive``)."""
    # Imported here: it pulls in TensorFlow, which a scenario without canaries never needs.
    from fedactors.privacy.gaussian_mean import GaussianDPMean

    return isinstance(stage, GaussianDPMean)


@dataclass(frozen=True)
class Scenario:
    """A federated-learning experiment: fleet, data, model, rounds, aggregation.

    See docs/scenarios.md for every field. A scenario file defines one at
    module level (``scenario = Scenario(...)``) and ``python -m fedactors
    FILE`` runs it. Every field is checked here, when the scenario is built
    (nothing is trained and TensorFlow is not imported), and a mistake raises
    ``ConfigError`` naming the field, e.g. ``rounds.cohort_size`` larger than
    the fleet, a DP aggregator whose ``expected_count`` differs from
    ``rounds.cohort_size``, or secure aggregation with a stage that needs
    individual updates.

    Args:
        name: Non-empty name of the run; it names the run directory
            (``runs/<name>-seed<S>``) and the reports.
        model: Zero-argument function returning a *built* ``keras.Model``
            (start it with ``keras.Input``). Called once for the server and once
            per executor, never per device.
        loss: The training and evaluation loss: a Keras loss name, object or
            function.
        data: ``data(fleet, rng) -> FederatedData``: each device's private data,
            in fleet order, plus the server's test set (docs/data.md); ``rng``
            is the run's data generator.
        fleet: Non-empty list of ``DeviceClass``; device ids are assigned class
            by class in this order.
        rounds: The server's round policy (``Rounds``). Default ``Rounds()``.
        training: Local epochs, batch size and optimizer factory
            (``LocalTraining``). Default ``LocalTraining()``.
        metrics: Evaluation metrics: ``"accuracy"`` (the flavour follows the
            model's output, as in ``compile``), other Keras metric names or
            ``keras.metrics.Metric`` objects (a plain function: wrap it in
            ``keras.metrics.MeanMetricWrapper(fn, name=...)``). Default ``("accuracy",)``.
        aggregator: How the cohort's deltas become one update (an
            ``Aggregator``: ``WeightedMean``, ``Clipped``, ``DPMean``,
            ``Median``, ...; docs/aggregation.md). Default ``WeightedMean()``
            (FedAvg).
        server_optimizer: How the aggregated delta moves the global model:
            ``FedAvgStep`` (default, learning rate 1), ``FedAdam`` or
            ``FedYogi`` (Reddi et al. 2021).
        seed: Root seed (whole number >= 0) of every random draw of the run;
            the CLI's ``--seed`` overrides it. Default 0.
        description: Free text for the reports. Default ``""``.
        privacy: ``Privacy`` budget and reporting options for a DP aggregator
            (docs/privacy.md); needs an aggregator that declares a DP release.
            ``None`` (default): a DP aggregator still reports ε with
            ``Privacy()``'s defaults.
        byzantine: Attackers among the devices, ``Byzantine(fraction, attack)``
            (docs/robustness.md); ``None`` (default): every device is honest.
        secure_aggregation: ``SecureAggregation(...)`` to have the sum taken by
            SecAgg/SecAgg+ so the server never reads one device's update
            (docs/secure_aggregation.md); ``None`` (default): the server reads
            each update.
        mode: ``None`` (default) for synchronous rounds, or ``FedBuff(...)``
            for asynchronous buffered aggregation (docs/async.md).
        randomness: Where DP noise and secure-aggregation secrets come from:
            ``"seeded"`` (default), the seed tree like every other draw, so the
            run replays bit for bit, and anyone who knows the seed can remove
            the noise and unmask updates; ``"system"``, the operating system's
            CSPRNG, so they cannot, and the run is not reproducible (cohorts,
            dropouts and training draws stay seeded). The CLI's
            ``--system-randomness`` sets ``"system"`` (docs/privacy.md).

    Examples:
        >>> from fedactors import DeviceClass, Rounds, Scenario
        >>> def model():  # called only when a run starts
        ...     import keras
        ...     return keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
        >>> scenario = Scenario(
        ...     name="demo", model=model, loss="sparse_categorical_crossentropy",
        ...     data=lambda fleet, rng: None,  # a real one returns FederatedData
        ...     fleet=[DeviceClass("phone", count=40), DeviceClass("laptop", count=10)],
        ...     rounds=Rounds(count=5, cohort_size=10))
        >>> scenario.fleet_size
        50
        >>> Scenario(name="demo", model=model, loss="mse", data=lambda fleet, rng: None,
        ...          fleet=[DeviceClass("phone", count=4)], rounds=Rounds(cohort_size=10))
        Traceback (most recent call last):
            ...
        fedactors.errors.ConfigError: rounds.cohort_size: 10 is larger than the fleet (4 devices)
    """

    name: str
    model: Callable[[], Any]
    loss: Any
    data: DataBuilder
    fleet: Sequence[DeviceClass]
    rounds: Rounds = field(default_factory=Rounds)
    training: LocalTraining = field(default_factory=LocalTraining)
    metrics: Sequence[Any] = ("accuracy",)
    aggregator: Aggregator = field(default_factory=WeightedMean)
    server_optimizer: ServerOptimizer = field(default_factory=FedAvgStep)
    seed: int = 0
    description: str = ""
    #: Privacy budget/reporting for a DP aggregator (docs/privacy.md); a DP
    #: aggregator without it still reports ε with ``Privacy()``'s defaults.
    privacy: Optional[Privacy] = None
    #: Optional attackers among the devices (fedactors.devices.byzantine).
    byzantine: Optional[Byzantine] = None
    #: None: the server reads each update. Else the sum is taken by SecAgg/SecAgg+.
    secure_aggregation: Optional[SecureAggregation] = None
    #: None: synchronous rounds; FedBuff(...): asynchronous buffered aggregation.
    mode: Optional[FedBuff] = None
    #: "seeded": noise and secrets from the seed tree (replayable, so not secret);
    #: "system": from the OS CSPRNG (secret, not reproducible).
    randomness: str = SEEDED

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", f"must be a non-empty string, got {self.name!r}")
        if not callable(self.model):
            raise ConfigError("model", f"must be a function returning a keras.Model, got {self.model!r}")
        if not callable(self.data):
            raise ConfigError("data", f"must be a function (fleet, rng) -> FederatedData, got {self.data!r}")
        if not isinstance(self.metrics, (list, tuple)):  # a bare "accuracy" would be read by letter
            raise ConfigError("metrics", "must be a list of metric names or Keras metrics, "
                                         f"e.g. [\"accuracy\"], got {self.metrics!r}")
        for i, metric in enumerate(self.metrics):
            if not isinstance(metric, str):
                import keras  # (only a scenario with metric objects pays for the import here)

                if not isinstance(metric, keras.metrics.Metric):
                    raise ConfigError(f"metrics[{i}]", "must be a metric name or a "
                                      "keras.metrics.Metric (a plain function has no name to "
                                      "report it under: wrap it, keras.metrics.MeanMetricWrapper"
                                      f"(fn, name=...)), got {stage_label(metric)}")
        fleet = tuple(self.fleet) if isinstance(self.fleet, (list, tuple)) else None
        if not fleet:
            raise ConfigError("fleet", f"must be a non-empty list of DeviceClass, got {self.fleet!r}")
        for i, cls_ in enumerate(fleet):
            if not isinstance(cls_, DeviceClass):
                raise ConfigError(f"fleet[{i}]", f"must be a DeviceClass, got {cls_!r}")
        object.__setattr__(self, "fleet", fleet)
        for name, kind in (("rounds", Rounds), ("training", LocalTraining),
                           ("aggregator", Aggregator), ("server_optimizer", ServerOptimizer)):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(name, f"must be a {kind.__name__}, got {getattr(self, name)!r}")
        if self.byzantine is not None and not isinstance(self.byzantine, Byzantine):
            raise ConfigError("byzantine", f"must be a Byzantine or None, got {self.byzantine!r}")
        if self.mode is not None:
            self._check_mode()  # first: FedBuff refuses secure aggregation whatever the stage
        if self.secure_aggregation is not None:
            if not isinstance(self.secure_aggregation, SecureAggregation):
                raise ConfigError("secure_aggregation", "must be a SecureAggregation or None, "
                                                        f"got {self.secure_aggregation!r}")
            check_aggregator(self.aggregator)
            # Poisson rounds may select more than expected: at most the whole fleet.
            check_min_inputs(self.secure_aggregation, self.aggregator,
                             self.fleet_size if self.rounds.sampling == "poisson"
                             else self.rounds.selected_size)
            if self.rounds.cohort_size < 2:
                raise ConfigError(
                    "rounds.cohort_size",
                    f"is {self.rounds.cohort_size} with secure_aggregation on: the sum of one "
                    "device's update is that update; secure aggregation needs at least 2",
                )
        if isinstance(self.seed, bool) or not hasattr(self.seed, "__index__") or self.seed < 0:
            raise ConfigError("seed", f"must be a whole number >= 0, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))  # a NumPy integer from a sweep, too
        if not isinstance(self.randomness, str) or self.randomness not in RANDOMNESS:
            raise ConfigError("randomness", f"must be 'seeded' or 'system', got {self.randomness!r}")
        if self.mode is None and self.rounds.cohort_size > self.fleet_size:
            raise ConfigError(
                "rounds.cohort_size",
                f"{self.rounds.cohort_size} is larger than the fleet ({self.fleet_size} devices)",
            )
        self._check_privacy()

    def _check_privacy(self) -> None:
        agg = self.aggregator
        try:
            declared = check_privacy_forwarded(agg)
        except ValueError as exc:
            raise ConfigError("aggregator", str(exc)) from None
        # (In FedBuff mode a release is one buffer; that check is the mode's.)
        if declared is not None and self.mode is None and (
                declared.expected_count != self.rounds.cohort_size):
            # DPMean divides by, and is accounted for, its own m; the server's
            # round context carries rounds.cohort_size. They must agree.
            raise ConfigError(
                "aggregator.expected_count",
                f"is {declared.expected_count!r} but rounds.cohort_size is "
                f"{self.rounds.cohort_size!r}; they must be equal",
            )
        if self.mode is None and self.rounds.sampling == "poisson" and (
                declared is not None and not isinstance(declared, (TreeRelease, SkellamRelease))):
            self._check_poisson_dp_fedavg(declared)
        if self.mode is None and self.rounds.sampling == "poisson" and (
                declared is not None and not isinstance(declared, SkellamRelease)):
            self._check_poisson_secure()
        self._check_min_reports(declared)
        if isinstance(declared, SkellamRelease):
            if self.mode is not None:
                # Said first: "add secure aggregation" would send the user in a circle.
                raise ConfigError(
                    "mode", "FedBuff cannot run DPMean.skellam: its noise shares need secure "
                    "aggregation, which FedBuff mode does not have; use synchronous rounds")
            from fedactors.privacy.skellam_mean import check_scenario

            check_scenario(declared, self.secure_aggregation)
        if self.privacy is None:
            return
        if not isinstance(self.privacy, Privacy):
            raise ConfigError("privacy", f"must be a Privacy or None, got {self.privacy!r}")
        if declared is None:
            raise ConfigError(
                "privacy", f"needs an aggregator that declares a DP release (private_release(), "
                f"e.g. DPMean; a stage wrapping one must subclass Wrapper), got {stage_label(agg)}"
            )
        # (FedBuff buffers are accounted without sampling, which PLD covers.)
        if self.privacy.method == "pld" and self.mode is None and self.rounds.sampling != "poisson":
            raise ConfigError(
                "privacy.method",
                f"'pld' needs rounds.sampling='poisson', got {self.rounds.sampling!r}",
            )
        if self.privacy.method == "pld" and isinstance(declared, (TreeRelease, SkellamRelease)):
            # Both are accounted in RDP only: 'pld' would be ignored (DP-FTRL) or refused
            # only when the run starts (Skellam).
            raise ConfigError(
                "privacy.method",
                f"'pld' is not available for "
                f"{'DPMean.tree' if isinstance(declared, TreeRelease) else 'DPMean.skellam'} "
                "(accounted in RDP only): use 'rdp' or 'best'",
            )
        if self.privacy.canaries:
            self._check_canaries(declared)
        if self.privacy.min_separation:
            self._check_min_separation(declared)

    def _check_poisson_dp_fedavg(self, declared: PrivateRelease) -> None:
        """DP-FedAvg on Poisson rounds: whether a round is released must not depend on
        how many devices reported (one device's presence changes that number, and the
        accounted subsampled Gaussian releases the noised sum of every sample, the
        empty one included: docs/privacy.md, "Poisson rounds release every round")."""
        if declared.distributed_noise:
            raise ConfigError(
                "rounds.sampling",
                "'poisson' cannot be used with distributed_noise=True: the devices add the "
                "noise, so a release's noise grows with the number sampled and shows it, and "
                "a round with fewer than min_survivors shares has no noise to release; the ε "
                "of Poisson sampling covers neither. Use 'fixed_size' or central noise")

    def _check_poisson_secure(self) -> None:
        """An add-or-remove-one DP release (DPMean.fixed, adaptive_clipping, tree) on Poisson
        rounds: no secure aggregation. A secure round aborts below 2 masked inputs (or its
        threshold t), so whether it releases depends on how many took part; one device more
        or fewer, and a neighbouring run releases where this one did not (found by an
        audit). Skellam's zero-out neighbours keep every device present: not affected."""
        if self.secure_aggregation is not None:
            raise ConfigError(
                "rounds.sampling",
                "'poisson' cannot be used with secure aggregation and an add-or-remove-one DP "
                "release (DPMean.fixed, adaptive_clipping or tree): a secure round with fewer "
                "than 2 masked inputs (or its threshold t) is not released, so whether a round "
                "releases depends on one device's presence, which no ε covers. Use "
                "'fixed_size' (or DPMean.skellam)")

    def _check_min_reports(self, declared: Optional[PrivateRelease]) -> None:
        """A DP release made whatever the number of reports takes no ``min_reports``: DP-FTRL
        always, DP-FedAvg with central noise on Poisson rounds. Skipping a round by that
        number would reveal it, and the noise does not cover it; an option that could never
        take effect is refused, not ignored."""
        if declared is None or self.mode is not None or self.rounds.min_reports <= 1:
            return
        if isinstance(declared, TreeRelease):
            who = "DPMean.tree (DP-FTRL) releases every round"
        elif (self.rounds.sampling == "poisson" and not isinstance(declared, SkellamRelease)
              and not declared.distributed_noise):
            who = ("with sampling='poisson' a DP-FedAvg aggregator releases every round (the "
                   "noise alone if nobody reported)")
        else:
            return
        raise ConfigError(
            "rounds.min_reports",
            f"is {self.rounds.min_reports}, but {who} whatever the number of reports: skipping "
            "a round by that number would reveal how many devices took part, which one "
            "device's presence changes and the noise does not cover; leave it at 1")

    def _check_min_separation(self, declared: PrivateRelease) -> None:
        """The separation rule is DP-FTRL's, and FedBuff needs devices enough to keep it."""
        b = self.privacy.min_separation
        if not isinstance(declared, TreeRelease):
            # Keeping devices out by their history makes selection non-uniform:
            # exactly the assumption DP-FedAvg's amplification rests on.
            raise ConfigError(
                "privacy.min_separation",
                "only applies to DP-FTRL (DPMean.tree), whose ε it bounds; with DP-FedAvg it "
                "would also make the cohorts a non-uniform sample, which its ε assumes they are")
        if self.mode is not None and self.fleet_size < (b + 1) * self.mode.buffer_size:
            # The devices of the last b buffers and of the one filling are all
            # ineligible: with fewer devices than that nobody could ever be given work.
            raise ConfigError(
                "privacy.min_separation",
                f"{b} with buffers of {self.mode.buffer_size} needs at least "
                f"{(b + 1) * self.mode.buffer_size} devices ((min_separation + 1) * buffer_size); "
                f"the fleet has {self.fleet_size}, so FedBuff would run out of devices it may "
                "give work to")

    def _check_canaries(self, declared: PrivateRelease) -> None:
        """Refuse canaries where their estimate could not mean what it says (docs/privacy.md)."""
        why = None
        if self.mode is not None:
            why = ("is not supported with mode=FedBuff(...): a buffer is not a sample, so there "
                   "is no participation rate a canary could copy from the devices")
        elif self.secure_aggregation is not None:
            why = ("is not supported with secure_aggregation: a canary would have to run the "
                   "protocol as a device, or the server would add it to a sum it cannot see")
        elif declared.distributed_noise:
            why = ("is not supported with distributed_noise=True: each canary would add its own "
                   "noise share, so the estimate would be of a noisier release than the run's")
        elif type(declared) is not PrivateRelease or not any(
                _is_dp_mean(stage) for stage in stage_chain(self.aggregator)):
            why = (f"needs a DPMean.fixed or DPMean.adaptive_clipping aggregator (canaries are "
                   f"clipped by its encode and noised by its release), got "
                   f"{stage_label(self.aggregator)}")
        if why is not None:
            raise ConfigError("privacy.canaries", why)

    @property
    def fleet_size(self) -> int:
        """The number of devices in the fleet, all classes together."""
        return sum(c.count for c in self.fleet)

    def _check_mode(self) -> None:
        if not isinstance(self.mode, FedBuff):
            raise ConfigError("mode", f"must be None (synchronous rounds) or FedBuff(...), got {self.mode!r}")
        if self.mode.buffer_size > self.fleet_size:
            raise ConfigError(
                "mode.buffer_size",
                f"{self.mode.buffer_size} is larger than the fleet ({self.fleet_size} devices): "
                "a buffer holds distinct devices",
            )
        if self.secure_aggregation is not None:
            raise ConfigError(
                "secure_aggregation",
                "is not implemented for mode=FedBuff(...): buffers are summed in plain, so the "
                "server would see every update; drop one of secure_aggregation and mode",
            )
        defaults = Rounds()
        for name in FEDBUFF_UNUSED_ROUNDS:
            value = getattr(self.rounds, name)
            if value != getattr(defaults, name):
                raise ConfigError(
                    f"rounds.{name}",
                    f"is {value!r}, but FedBuff does not use it (it uses only rounds.count, "
                    "rounds.deadline as a per-device timeout and rounds.eval_every; buffers "
                    "are sized by mode.buffer_size); remove it")
        # A DP aggregator is calibrated for a cohort of expected_count; in FedBuff
        # each release is over one buffer of buffer_size updates.
        declared = self.aggregator.private_release()
        if declared is not None and declared.distributed_noise:
            # The devices add the noise before the server scales each contribution by its
            # staleness weight, so a buffer carries z*C*sqrt(sum(w^2)/k), less than charged.
            raise ConfigError(
                "aggregator",
                "device-added noise (distributed_noise=True, or DPMean.skellam) cannot be used "
                "with mode=FedBuff(...): each device's "
                "noise share is scaled down with its update by the staleness weight, so a "
                "buffer carries less noise than the accounting charges (and FedBuff has no "
                "secure aggregation for device-added noise to serve); use central noise")
        if declared is not None:
            # A staleness weight above 1 scales a clipped update past the sensitivity
            # the DP release is accounted at; probe the staleness values a run can see.
            weights = np.asarray(self.mode.staleness(np.arange(0, 100_001)), np.float64)
            if not np.all((weights >= 0.0) & (weights <= 1.0)):
                raise ConfigError(
                    "mode.staleness",
                    f"{self.mode.staleness!r} gives weights outside [0, 1] (e.g. "
                    f"{weights[(weights < 0) | (weights > 1)][0]:g}), which a DP aggregator cannot "
                    "account: its sensitivity is the clip norm",
                )
        if declared is not None and declared.expected_count != self.mode.buffer_size:
            raise ConfigError(
                "mode.buffer_size",
                f"{self.mode.buffer_size} differs from the aggregator's expected_count "
                f"{declared.expected_count}: each buffer is one DP release over buffer_size updates",
            )
