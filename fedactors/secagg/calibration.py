"""Secure aggregation's cost model, as measured by benchmarks/secagg_costs.py.

Written by that script; do not edit by hand. Seconds per operation on the
machine named in ``SOURCE``; ``CryptoCosts.calibrated()`` reads them
(see fedactors.secagg.costs).
"""

PRICES = {
    'keygen': 7.178e-05,
    'agree': 6.495e-05,
    'encrypt': 1.903e-05,
    'decrypt': 3.597e-05,
    'share': 2.008e-06,
    'reconstruct': 1.872e-06,
    'mask_byte': 1.878e-09,
    'sign': 5.172e-05,
    'verify': 0.000162,
}
REFERENCE_COMPUTE = 1000.0
SOURCE = 'benchmarks/secagg_costs.py on x86_64, CPython 3.11.7, 2026-12-02'
