"""smart_home with 20% of its devices Byzantine, aggregated robustly.

The same fleet, data, model and rounds as ``smart_home.py``; 56 of its 280
devices (chosen from the seed) train honestly, then send their delta
sign-flipped and scaled 10x. Plain FedAvg is pulled backwards by them; the
coordinate-wise trimmed mean used here drops them coordinate by coordinate.
``VARIANTS`` holds the same attack under every shipped stage, for
``python -m fedactors.experiments.byzantine`` and docs/robustness.md.
"""

from dataclasses import replace

import smart_home

from fedactors import Byzantine, Krum, Median, SignFlip, TrimmedMean, WeightedMean

attack = Byzantine(fraction=0.2, attack=SignFlip(scale=10.0))
base = replace(smart_home.scenario, name="smart_home_byzantine", byzantine=attack,
               description="smart_home with 20% of devices sending sign-flipped, 10x deltas.")

VARIANTS = {
    "fedavg, no attack": replace(smart_home.scenario, name="smart_home_clean"),
    "fedavg": replace(base, aggregator=WeightedMean()),
    "median": replace(base, aggregator=Median()),
    "trimmed_mean(0.25)": replace(base, aggregator=TrimmedMean(beta=0.25)),
    "multi_krum(f=8, m=10)": replace(base, aggregator=Krum(f=8, m=10)),
}

scenario = VARIANTS["trimmed_mean(0.25)"]
