"""Problems kept out of lts's tuning: run once, after the defaults were fixed (docs/experiments.md).

A plug-in simulator loaded as ``heldout.blobs:BlobsSimulator``, the way a user's own is
(``--sim package.module:Class``), with its target in ``configs/targets/heldout_blobs.yaml``.
"""
