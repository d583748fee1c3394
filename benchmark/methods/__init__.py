"""The method contract (:mod:`benchmark.methods.base`) and the catalogue of registered methods
(:mod:`benchmark.methods.catalogue`: the built-in ``baselines`` and ``mimo``, and plug-ins).

This package re-exports the contract, so a method module writes
``from benchmark.methods import Method, register_method``; it imports no method itself.
"""

from .base import (METHODS, EvalVariant, Method, MethodOptions, SingleMember, StageContext, Task, combine, ensemble_loss,
                   register_method)

__all__ = ["METHODS", "EvalVariant", "Method", "MethodOptions", "SingleMember", "StageContext", "Task", "combine", "ensemble_loss",
           "register_method"]
