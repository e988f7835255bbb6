"""The worker loop: messages in, micro-batches through, records out in order.

``runner`` is the loop, written against small protocols (``source`` for the
messages of a consumer-group member, a record sink, a clock; ``hooks`` for
bounded runs and observers). ``batching`` cuts the stream into micro-batches
by count, time or budget; ``starts`` starts each image as it joins its batch
on the threads of ``imagepool`` (timeouts count running time); ``processor``
does one image from ref to record (``outcome``), and ``batchrun`` a whole
micro-batch through ``batch`` operations. ``emitter`` sends each batch's
records in consumption order; ``assignment`` reads what new partitions need
before their messages run, and ``lag`` measures how far the group is behind.
"""
