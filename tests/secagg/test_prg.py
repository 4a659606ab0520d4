
import numpy as np

from fedactors.secagg.prg import expand


def test_deterministic_masked_and_seed_sensitive():
    a = expand(b"\x01" * 32, 1000, 20)
    assert (a == expand(b"\x01" * 32, 1000, 20)).all()
    assert a.max() < 2**20 and a.dtype == np.uint64
    assert (a != expand(b"\x02" * 32, 1000, 20)).mean() > 0.99


def test_a_million_elements_expand_to_the_right_shape_and_range():
    # How fast this is lives in benchmarks/prg.py, not in a stopwatch that flakes under load.
    out = expand(b"\x03" * 32, 10**6, 62)
    assert out.shape == (10**6,) and out.dtype == np.uint64
    assert int(out.max()) < 2**62 and len(np.unique(out[:1000])) == 1000
