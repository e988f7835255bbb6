"""Records and their wire format: what imgstream moves, and how it is written.

``records`` holds the frozen dataclasses (refs, results, batch summaries,
failures), ``codec`` turns them into bytes (versioned JSON, with the size
limits of both ways), ``decoding`` turns bytes back into records strictly
(a bad message becomes a failure, never an exception in ``poll()``), and
``topics`` the settings of the topics imgstream creates, by role. All of it is
pure: no Kafka, no environment, no disk.
"""
