"""How every Kafka client is configured: one table, one place.

``settings`` is the one table of client defaults and the properties a user
may set (and the mapping of client errors to imgstream's), ``properties``
reads Java-style client properties files and JAAS lines (secrets that do not
print), ``checks`` checks property values alone and together, and ``compat``
holds two fixes to kafka-python 3.0's networking, applied before a client is
made.
"""
