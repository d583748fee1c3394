"""The catalogue of methods, above the methods themselves: loading the built-in ones (``baselines``,
``mimo``) and the user's plug-ins (:mod:`.methods`, :mod:`.plugins`), and the contract checks any
method must pass (:mod:`.checks`, used by ``python -m benchmark check-method`` and the tests).

The contract the methods implement is :mod:`benchmark.methods`, below them.
"""
