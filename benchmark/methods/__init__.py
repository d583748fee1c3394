"""The method contract (:mod:`benchmark.methods.base`). The catalogue of registered methods (the
built-in ``baselines`` and ``mimo``, and plug-ins) is :mod:`benchmark.catalogue`, above them.

This package re-exports the contract, so a method module writes
``from benchmark.methods import Method, register_method``; it imports no method itself.
"""

from .base import (METHODS, EvalVariant, Method, MethodOptions, NormLayout, SingleMember, StageContext, Task, combine, ensemble_loss,
                   register_method)

__all__ = ["METHODS", "EvalVariant", "Method", "MethodOptions", "NormLayout", "SingleMember", "StageContext", "Task", "combine",
           "ensemble_loss", "register_method"]
