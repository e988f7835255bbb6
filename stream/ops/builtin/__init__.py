"""The built-in operations, one module per family (colour, enhancement,
geometry, filters, edges, segmentation, analysis, detection, motion, models).

Each is defined with ``@imgstream.op``, exactly as a plugin's operations are;
:func:`imgstream.ops.build_registry` imports the families when a registry is
built, so importing this package's parent stays cheap.
"""
