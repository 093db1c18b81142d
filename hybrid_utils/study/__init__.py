"""The study machinery: what reproduces, plans, sweeps, tunes, tests and reports the committed study.

A chapter or a student reading the library needs none of it: the teaching core (:mod:`hybrid_utils`)
never imports this package; it imports the core. ``python -m hybrid_utils <command>`` is its command line
(:mod:`hybrid_utils.study.cli`).
"""
