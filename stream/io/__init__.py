"""Image input and output: where images are read from, how they are decoded,
encoded and written, and what happens while the output store is down.

``stores`` picks the store by scheme: ``storage`` for local files (race-free
reads under the allowed roots, atomic writes) and ``objstore`` for ``s3://``
(the one module that owns the S3 client; ``awsconfig`` reads its settings the
standard AWS way). ``headers`` and ``imaging`` read an image's size from its
header and decode it with the limits checked before anything is allocated;
``png`` writes PNG output (with the C coder ``imgstream._deflate``).
``outage`` is the output gate: a full or failing store holds work back
instead of dead-lettering it.
"""
