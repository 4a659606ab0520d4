import numpy as np
import pytest

from fedactors.secagg import keys


def test_agreement_symmetric_and_binding():
    rng = np.random.default_rng(5)
    a, b, c = (keys.generate_keypair(rng) for _ in range(3))
    k_ab = keys.aead_key(a.private, b.public)
    assert k_ab == keys.aead_key(b.private, a.public)
    assert keys.mask_seed(a.private, b.public, 0) == keys.mask_seed(b.private, a.public, 0)
    assert keys.mask_seed(a.private, b.public, 0) != k_ab
    ct = keys.encrypt(k_ab, b"share", 1, 2, 7, rng)
    assert keys.decrypt(k_ab, ct, 1, 2, 7) == b"share"
    for sender, recipient, rnd in [(1, 3, 7), (2, 1, 7), (1, 2, 8)]:
        with pytest.raises(keys.DecryptionError):
            keys.decrypt(k_ab, ct, sender, recipient, rnd)
    with pytest.raises(keys.DecryptionError):
        keys.decrypt(keys.aead_key(a.private, c.public), ct, 1, 2, 7)


def test_keys_reproducible_from_rng():
    assert (keys.generate_keypair(np.random.default_rng(9)).public
            == keys.generate_keypair(np.random.default_rng(9)).public)


def test_signatures_verify_only_for_their_key_and_data():
    a = keys.generate_signing_key(np.random.default_rng(1))
    b = keys.generate_signing_key(np.random.default_rng(2))
    assert a.public == keys.generate_signing_key(np.random.default_rng(1)).public  # reproducible
    assert len(a.public) == keys.VERIFICATION_KEY_BYTES
    sig = keys.sign(a, b"view")
    assert len(sig) == keys.SIGNATURE_BYTES
    assert keys.verify(a.public, sig, b"view")
    assert not keys.verify(b.public, sig, b"view")
    assert not keys.verify(a.public, sig, b"vieW")
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    assert not keys.verify(a.public, flipped, b"view")
    # Malformed keys and signatures are invalid, not errors.
    assert not keys.verify(a.public[:31], sig, b"view")
    assert not keys.verify(a.public, sig[:63], b"view")
    with pytest.raises(ValueError, match="32 bytes"):
        keys.signing_key_from_private_bytes(b"x" * 31)
