"""Devices: profiles, the columnar fleet, availability models, Byzantine attacks and the
device actors that train on their own data."""
