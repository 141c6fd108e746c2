"""Policies over simulator parameters and the REINFORCE update.

>>> from policies import Policy, reinforce_update
"""

from .distribution import Policy, PolicySample
from .reinforce import UpdateStats, moving_average, reinforce_update

__all__ = ["Policy", "PolicySample", "reinforce_update", "moving_average", "UpdateStats"]
