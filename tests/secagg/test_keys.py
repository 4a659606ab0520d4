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
