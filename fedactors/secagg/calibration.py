"""Secure aggregation's cost model, as measured by benchmarks/secagg_costs.py.

Written by that script; do not edit by hand. Seconds per operation on the
machine named in ``SOURCE``; ``CryptoCosts.calibrated()`` reads them
(see fedactors.secagg.costs).
"""

PRICES = {
    'keygen': 6.39e-05,
    'agree': 4.652e-05,
    'encrypt': 1.194e-05,
    'decrypt': 2.189e-05,
    'share': 1.349e-06,
    'reconstruct': 1.177e-06,
    'mask_byte': 1.361e-09,
    'sign': 3.69e-05,
    'verify': 0.0001169,
}
REFERENCE_COMPUTE = 1000.0
SOURCE = 'benchmarks/secagg_costs.py on x86_64, CPython 3.11.7, 2026-12-02'
