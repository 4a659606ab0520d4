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


def test_malicious_mode_message_sizes_count_every_id_signature_and_forwarded_view():
    from fedactors.secagg.messages import ConsistencyRequest, SignedView

    req = ConsistencyRequest(1, (1, 2, 3), (4,))
    assert req.nbytes == 4 + 8 + 4 * 4 and req.peers == 4
    view = SignedView(1, (1, 2, 3), (4,), b"s" * 64)
    assert view.nbytes == 4 + 8 + 4 * 4 + 64
    other = SignedView(2, (1, 2), (), b"t" * 64)
    assert other.nbytes == 4 + 8 + 2 * 4 + 64
    plain = UnmaskRequest(1, (1, 2, 3), (4,))
    checked = UnmaskRequest(1, (1, 2, 3), (4,), {1: view, 2: other})
    # The views section: a 4-byte count, then each view as the server received it.
    assert checked.nbytes == plain.nbytes + 4 + view.nbytes + other.nbytes == 28 + 4 + 92 + 84
    assert checked.peers == plain.peers == 4
    # Requests stay hashable, and the views tell requests apart.
    assert hash(checked) == hash(plain) and checked != plain
