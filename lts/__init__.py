"""lts — learning to simulate.

The outer loop (`lts.loop`), downstream tasks (`lts.tasks`), targets, the GAN refiner,
Ray execution, run directories and the command lines (`python -m lts.optimize`,
`lts.inspect`, `lts.render`, `lts.evaluate`, `lts.refine`, `lts.compare`, `lts.bench`).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
