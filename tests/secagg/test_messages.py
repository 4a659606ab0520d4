import numpy as np

from fedactors.secagg.messages import MaskedInput, ShareKeys, UnmaskRequest, UnmaskResponse
from fedactors.secagg.shamir import split


def test_nbytes_reflect_encoded_sizes():
    assert MaskedInput(1, np.zeros(1000, dtype=np.uint64), 20).nbytes == 4 + 1000 * 3
    assert MaskedInput(1, np.zeros(1000, dtype=np.uint64), 62).nbytes == 4 + 1000 * 8
    assert ShareKeys(1, {2: b"x" * 132, 3: b"y" * 132}).nbytes == 4 + 2 * (4 + 132)
    assert UnmaskRequest(1, (1, 2, 3), (4,)).nbytes == 4 + 8 + 4 * 4
    shares = split(b"k" * 32, 2, [1, 2], np.random.default_rng(0))
    resp = UnmaskResponse(1, {2: shares[1]}, {3: shares[1]})
    assert resp.nbytes == 4 + 8 + 2 * (4 + len(shares[1].to_bytes()))
