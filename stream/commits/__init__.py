"""Commits: what a worker must have done before an offset moves, and what it keeps.

``offsets`` turns completed images into safe commit points; ``checkpoint``
holds all commit bookkeeping of one worker (the at-least-once and the
transactional checkpoint share one offset ledger), with ``transactions`` the
pure policy of one transaction per batch and ``delivery`` the sending and
re-sending of records whose acknowledgements a commit waits for.
``attempts`` and ``isolation`` are crash isolation (start counts written before
images start; an image that keeps killing its worker is dead-lettered), and
``state`` and ``snapshots`` the per-source state of stateful pipelines,
snapshotted with each commit and restored on assignment.
"""
