"""Search strategies over simulator parameters ψ, behind one ask/tell interface.

>>> from policies import make_strategy
>>> s = make_strategy("reinforce", space, seed=0)        # doctest: +SKIP
>>> psi = s.ask(4); s.tell(psi, rewards); s.recommend()  # doctest: +SKIP
"""

from .base import Strategy, point_json
from .distribution import DESIGNS, Policy, PolicySample, column_order, orthogonal_signs
from .registry import STRATEGIES, make_strategy, strategy_class, strategy_options
from .reinforce import ReinforceStrategy, UpdateStats, moving_average, reinforce_update

__all__ = [
    "DESIGNS",
    "STRATEGIES",
    "Policy",
    "PolicySample",
    "ReinforceStrategy",
    "Strategy",
    "UpdateStats",
    "column_order",
    "make_strategy",
    "moving_average",
    "orthogonal_signs",
    "point_json",
    "reinforce_update",
    "strategy_class",
    "strategy_options",
]
