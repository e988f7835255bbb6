"""imgstream-example-plugin: operations for imgstream, the template of a plugin.

The operations live in :mod:`imgstream_example_plugin.ops`, the module the
``imgstream.ops`` entry point names. Importing this package does nothing else.
"""
