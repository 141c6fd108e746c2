"""Problems kept out of lts's tuning (docs/experiments.md): plug-in simulators loaded by path, the
way a user's own is (``--sim package.module:Class``): ``heldout.blobs:BlobsSimulator`` and
``heldout.helix:HelixSimulator``, with their targets in ``configs/targets/heldout_*.yaml``.
"""
