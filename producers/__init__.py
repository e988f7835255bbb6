"""Reference producers: what puts image refs (never bytes) on the refs topic.

``inputs`` expands what the user named (``files``: files, directories, globs,
@manifests; ``objects``: ``s3://`` prefixes) into refs; ``watch`` produces a
ref for each new complete file in watched directories; ``tiles`` cuts large
images into overlapping tiles, one ref each; ``features`` reads what the
feature-based partitioners need; ``produce`` sends refs with an idempotent
producer. ``video/`` is ``capture``: video files and live cameras.
"""
