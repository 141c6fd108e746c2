"""Policies over simulator parameters and the REINFORCE update.

>>> from policies import Policy, reinforce_update
"""

from .distribution import DESIGNS, Policy, PolicySample, column_order, orthogonal_signs
from .reinforce import UpdateStats, moving_average, reinforce_update

__all__ = [
    "DESIGNS",
    "Policy",
    "PolicySample",
    "column_order",
    "orthogonal_signs",
    "reinforce_update",
    "moving_average",
    "UpdateStats",
]
