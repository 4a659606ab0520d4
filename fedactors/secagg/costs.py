"""What secure aggregation's cryptography costs, in simulated seconds.

A device does real work in each protocol step: it generates key pairs, agrees
a key with every neighbour, Shamir-shares two secrets among its neighbourhood,
encrypts a bundle for every holder, decrypts the bundles it is sent, and
expands one pseudorandom mask per neighbour to the model's dimension.
Bonawitz et al. (2017) show the client's time growing with neighbours x
dimension; on a slow phone that time decides who misses a step's deadline.
The server's unmasking (Shamir reconstructions, key agreements and mask
expansions for the dropped) takes time too.

The model is a price per operation, counted from the protocol's public
structure (how many peers a message carries), so the real protocol and
``mode="modeled"`` charge exactly the same seconds:

======================  ==================================================
operation               one unit is
======================  ==================================================
``keygen``              one X25519 key pair from 32 random bytes
``agree``               one X25519 agreement plus HKDF-SHA256
``encrypt``             one ChaCha20-Poly1305 share bundle sealed
``decrypt``             one bundle opened and parsed
``share``               one Shamir share produced (one holder, one secret)
``reconstruct``         one share combined into a rebuilt secret
``mask_byte``           one byte of AES-CTR mask expanded (8 per element)
``sign`` / ``verify``   one Ed25519 signature made / checked
======================  ==================================================

The prices are measured on the project's own implementation by
``benchmarks/secagg_costs.py``, which writes :mod:`fedactors.secagg.calibration`
(the figures are in docs/secure_aggregation.md). They are constants of the
code, never measured during a run, so a run replays bit for bit on any machine.

A device runs the calibrated prices scaled by its training speed: a device of
``compute`` examples per second takes ``reference_compute / compute`` times the
calibrated seconds (a phone slow at training is slow at cryptography too). The
server runs at the calibrated prices.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from fedactors.errors import ConfigError
from fedactors.secagg import calibration
from fedactors.validation import non_negative, positive

#: Bytes of AES-CTR keystream per mask element: one little-endian uint64 word.
MASK_WORD_BYTES = 8


@dataclass(frozen=True)
class CryptoCosts:
    """Seconds per cryptographic operation, and the device speed they belong to.

    Args:
        keygen: One X25519 key pair from 32 random bytes.
        agree: One X25519 key agreement plus HKDF-SHA256.
        encrypt: One share bundle sealed with ChaCha20-Poly1305.
        decrypt: One share bundle opened and parsed.
        share: One Shamir share produced (per holder, per secret).
        reconstruct: One share combined when rebuilding a secret.
        mask_byte: One byte of pseudorandom mask expanded.
        sign: One Ed25519 signature made (malicious-server mode).
        verify: One Ed25519 signature checked (malicious-server mode).
        reference_compute: The training speed, in examples per simulated
            second, of a device that runs the cryptography at exactly these
            prices; a device of ``compute`` c takes ``reference_compute / c``
            times as long. Default 1000.0, ``DeviceClass``'s default compute.
        source: Where the prices come from (machine and date), for reports.

    Examples:
        >>> from fedactors.secagg.costs import CryptoCosts
        >>> free = CryptoCosts.free()
        >>> free.device_seconds("share_keys", peers=10, dim=100, compute=500.0)
        0.0
        >>> c = CryptoCosts(agree=1e-4, share=1e-5, encrypt=2e-6)
        >>> round(c.device_seconds("share_keys", peers=3, dim=100, compute=1000.0), 9)
        0.000264
    """

    keygen: float = 0.0
    agree: float = 0.0
    encrypt: float = 0.0
    decrypt: float = 0.0
    share: float = 0.0
    reconstruct: float = 0.0
    mask_byte: float = 0.0
    sign: float = 0.0
    verify: float = 0.0
    reference_compute: float = 1000.0
    source: str = "set by hand"

    def __post_init__(self) -> None:
        try:
            for f in fields(self):
                if f.name in ("reference_compute", "source"):
                    continue
                non_negative(f.name, getattr(self, f.name))
            positive("reference_compute", self.reference_compute)
            if not isinstance(self.source, str):
                raise ConfigError("source", f"must be a string, got {self.source!r}")
        except ConfigError as exc:
            raise exc.within("costs") from None

    @classmethod
    def calibrated(cls) -> CryptoCosts:
        """The prices measured on this project's implementation (see the module doc)."""
        return cls(**calibration.PRICES, reference_compute=calibration.REFERENCE_COMPUTE,
                   source=calibration.SOURCE)

    @classmethod
    def free(cls) -> CryptoCosts:
        """Cryptography that takes no simulated time (the simulator before it had a model)."""
        return cls(source="free: protocol compute not modelled")

    # -- devices -------------------------------------------------------------

    def device_seconds(self, step: str, peers: int, dim: int, compute: float,
                       views: int = 0, signed: bool = False) -> float:
        """Simulated seconds a device of training speed ``compute`` spends on ``step``.

        ``peers`` is what the step works on, read from the message that
        starts it (``0`` for advertising keys): key pairs broadcast (the
        device's own included) for ``share_keys``, bundles delivered for
        ``masked_input``, devices listed for the consistency check and
        unmasking. ``views``: signed views to check before unmasking;
        ``signed``: key advertisements are signed and checked (both
        malicious-server mode). ``dim``: masked elements.
        """
        return (self.device_base_seconds(step, peers, dim, views, signed)
                * self.reference_compute / compute)

    def device_base_seconds(self, step: str, peers: int, dim: int, views: int = 0,
                            signed: bool = False) -> float:
        """``device_seconds`` for a device at ``reference_compute``."""
        if step == "advertise_keys":
            # c (bundle encryption) and s (pairwise masks); signed under a malicious server.
            return 2 * self.keygen + (self.sign if signed else 0.0)
        if step == "share_keys":
            others = max(peers - 1, 0)
            # b_u and s_u^SK are each shared to every holder, itself included; under a
            # malicious server every other holder's signed keys are checked first.
            return (others * (self.agree + self.encrypt + (self.verify if signed else 0.0))
                    + 2 * peers * self.share)
        if step == "masked_input":
            # One agreement per bundle sender for the pairwise seed, one mask per
            # neighbour plus the self-mask b_u.
            return (peers * (self.decrypt + self.agree)
                    + (peers + 1) * dim * MASK_WORD_BYTES * self.mask_byte)
        if step == "sign_view":
            return self.sign
        if step == "unmask":
            return views * self.verify  # picking shares is bookkeeping
        raise ValueError(f"unknown secure aggregation step {step!r}")

    # -- the server ----------------------------------------------------------

    def unmask_seconds(self, dim: int, survivor_thresholds: list[int],
                       dropped: list[tuple[int, int]]) -> float:
        """Server seconds to remove the masks.

        ``survivor_thresholds``: t of every survivor, whose b_u is rebuilt from t
        shares and expanded. ``dropped``: (t, partners) of every dropped device
        whose mask must be undone: s_v^SK rebuilt, its key pair derived, and one
        agreement and one mask expansion per surviving partner.
        """
        mask = dim * MASK_WORD_BYTES * self.mask_byte
        seconds = sum(t * self.reconstruct + mask for t in survivor_thresholds)
        for t, partners in dropped:
            seconds += t * self.reconstruct + self.keygen + partners * (self.agree + mask)
        return seconds
