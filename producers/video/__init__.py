"""Refs from video: files, live cameras and the cameras file of ``capture``.

``capture`` reads frames from a video file or a live stream and emits a ref
per stored frame; ``stream_reader`` keeps reading a live stream that drops,
stalls and comes back; ``live`` runs the cameras of a capture, one thread
each, started, stopped and restarted by name; ``cameras`` reads the cameras
file (TOML) with stream URLs whose secrets never print; ``frames`` stores one
source's frames; ``backlog`` tells ``--frames latest`` how far the workers are
behind each camera, from the committed offsets ``following`` reads.
"""
