"""Federated datasets: each device's private arrays plus the server's test set."""

from fedactors.data.federated import FederatedData
from fedactors.data.healthcare import make_hospital_data
from fedactors.data.smart_home import ACTIVITIES, DEVICE_KINDS, make_smart_home_data

__all__ = [
    "ACTIVITIES",
    "DEVICE_KINDS",
    "FederatedData",
    "make_hospital_data",
    "make_smart_home_data",
]
