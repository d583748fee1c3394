"""Griffe extension of the plures site: the docstrings' Sphinx roles (``:class:`X```) shown as code
in the API reference (the same rule as the generated method pages)."""

from __future__ import annotations

from typing import Any

import griffe

from benchmark.tools.docs_pages import roles_to_code


class SphinxRolesAsCode(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = roles_to_code(obj.docstring.value)
