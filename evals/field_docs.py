"""Config dataclass field docstrings, so one text serves the code reader and ``--help``."""

import ast
import inspect
import itertools
from functools import cache


@cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: the string literal written under it}`` for a dataclass."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = {}
    for node, after in itertools.pairwise(body):
        is_doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and is_doc:
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs
