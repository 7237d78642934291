"""Griffe extension: a class constant ``NAME: Final = SomeClass(...)`` shows as what it is.

PEP 591: a bare ``Final`` on an assignment in a class body declares a class variable whose
type is that of its value. Griffe would show such a constant as ``NAME: Final``, labelled
both class and instance attribute (``LoopEvents.EPOCH_END`` on the API pages); this gives it
the value's class as its type and the class-attribute label only, as a type checker sees it.
Loaded by mkdocs.yml (``extensions:`` of the Python handler).
"""

from __future__ import annotations

import ast
from typing import Any

import griffe


def _is_bare_final(annotation: ast.expr) -> bool:
    if isinstance(annotation, ast.Name):
        return annotation.id == "Final"
    return isinstance(annotation, ast.Attribute) and annotation.attr == "Final"


class FinalConstants(griffe.Extension):
    """Type and label bare-``Final`` class constants from their values."""

    def on_attribute_instance(
        self, *, node: ast.AST | griffe.ObjectNode, attr: griffe.Attribute, **kwargs: Any
    ) -> None:
        if not isinstance(node, ast.AnnAssign) or not _is_bare_final(node.annotation):
            return
        if attr.parent is None or not attr.parent.is_class:
            return
        value = node.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
            attr.annotation = griffe.ExprName(value.func.id, parent=attr.parent)
        attr.labels.discard("instance-attribute")
        attr.labels.add("class-attribute")
