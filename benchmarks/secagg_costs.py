"""Calibrate secure aggregation's cost model on this machine.

``python benchmarks/secagg_costs.py [--quick] [--dry-run]`` times each
cryptographic operation of fedactors' own SecAgg implementation (X25519
key pairs and agreements with HKDF, ChaCha20-Poly1305 share bundles,
Shamir shares over GF(65537), AES-CTR mask expansion, Ed25519 signatures)
and writes the prices to ``fedactors/secagg/calibration.py``, which
``CryptoCosts.calibrated()`` returns. Each price is the median over
repeats of a timed batch, per operation. ``--dry-run`` prints without
writing.

The prices become constants of the code: a run never measures anything, so
it replays bit for bit on any machine. Re-run this after changing the
cryptography, and update the table in docs/secure_aggregation.md (a test
checks that the two agree).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from fedactors.secagg import keys, prg, shamir  # noqa: E402
from fedactors.secagg.client import _bundle, _unbundle  # noqa: E402
from fedactors.secagg.costs import MASK_WORD_BYTES, CryptoCosts  # noqa: E402

OUT = ROOT / "fedactors" / "secagg" / "calibration.py"
#: A SecAgg+ neighbourhood at 1,000 devices under the defaults: k = 100, t = 42.
HOLDERS, THRESHOLD = 101, 42
MASK_DIM = 200_000


def per_op(batch: Callable[[], int], repeats: int) -> float:
    """Median seconds per operation; ``batch`` runs some operations and says how many."""
    batch()  # warm caches and imports
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        n = batch()
        samples.append((time.perf_counter() - t) / n)
    return statistics.median(samples)


def measure(repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    a, b = keys.generate_keypair(rng), keys.generate_keypair(rng)
    aead = keys.aead_key(a.private, b.public)
    holders = list(range(1, HOLDERS + 1))
    b_shares = shamir.split(rng.bytes(32), THRESHOLD, holders, rng)
    s_shares = shamir.split(rng.bytes(32), THRESHOLD, holders, rng)
    plain = _bundle(1, 2, b_shares[2], s_shares[2])
    sealed = keys.encrypt(aead, plain, 1, 2, 0, rng)
    chosen = [b_shares[h] for h in holders[:THRESHOLD]]
    signer = Ed25519PrivateKey.from_private_bytes(rng.bytes(32))
    verifier = signer.public_key()
    view = bytes(4 * 2 * HOLDERS)
    signature = signer.sign(view)
    seed = rng.bytes(32)
    n = 200

    def keygen() -> int:
        for _ in range(n):
            keys.generate_keypair(rng)
        return n

    def agree() -> int:
        for _ in range(n):
            keys.aead_key(a.private, b.public)
        return n

    def encrypt() -> int:
        for _ in range(n):
            keys.encrypt(aead, plain, 1, 2, 0, rng)
        return n

    def decrypt() -> int:
        for _ in range(n):
            _unbundle(keys.decrypt(aead, sealed, 1, 2, 0))
        return n

    def share() -> int:
        for _ in range(10):
            shamir.split(seed, THRESHOLD, holders, rng)
        return 10 * HOLDERS

    def reconstruct() -> int:
        for _ in range(20):
            shamir.reconstruct(chosen, THRESHOLD)
        return 20 * THRESHOLD

    def mask_byte() -> int:
        for _ in range(5):
            prg.expand(seed, MASK_DIM, 32)
        return 5 * MASK_DIM * MASK_WORD_BYTES

    def sign() -> int:
        for _ in range(n):
            signer.sign(view)
        return n

    def verify() -> int:
        for _ in range(n):
            verifier.verify(signature, view)
        return n

    ops = dict(keygen=keygen, agree=agree, encrypt=encrypt, decrypt=decrypt, share=share,
               reconstruct=reconstruct, mask_byte=mask_byte, sign=sign, verify=verify)
    return {name: per_op(fn, repeats) for name, fn in ops.items()}


def render(prices: dict[str, float], source: str) -> str:
    body = "\n".join(f"    {name!r}: {value:.4g}," for name, value in prices.items())
    return (
        '"""Secure aggregation\'s cost model, as measured by benchmarks/secagg_costs.py.\n\n'
        "Written by that script; do not edit by hand. Seconds per operation on the\n"
        "machine named in ``SOURCE``; ``CryptoCosts.calibrated()`` reads them\n"
        "(see fedactors.secagg.costs).\n"
        '"""\n\n'
        f"PRICES = {{\n{body}\n}}\n"
        "REFERENCE_COMPUTE = 1000.0\n"
        f"SOURCE = {source!r}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 15")
    parser.add_argument("--dry-run", action="store_true", help="print, do not write")
    args = parser.parse_args()
    prices = measure(3 if args.quick else 15)
    source = (f"benchmarks/secagg_costs.py on {platform.processor() or platform.machine()}, "
              f"{platform.python_implementation()} {platform.python_version()}, "
              f"{datetime.date.today().isoformat()}")
    CryptoCosts(**prices, source=source)  # the same checks a scenario's costs get
    print("| operation | µs per operation |\n|---|---|")
    for name, value in prices.items():
        print(f"| {name} | {value * 1e6:.4g} |")
    if not args.dry_run:
        OUT.write_text(render(prices, source))
        print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
