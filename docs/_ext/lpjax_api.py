"""Writes the API reference from ``lpjax.__all__`` when the docs are built.

The reference is grouped as optax's is, one page per theme (``PAGES``: transforms, the
LPL solver with its signs and bounds, Meta-LPL, losses, priors, diagnostics). Each page
``api/<page>.rst`` holds only its title and introduction; this extension appends one
section per private module of that page that a public name is imported from (in the
order of ``SECTIONS``), each opened by that module's docstring and followed by an
autodoc entry per name, in the order the module defines them. Adding, renaming or moving
a public name therefore needs no edit of the docs; a new private module must be given a
page here (the build fails until it is)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
from pathlib import Path

from sphinx.pycode import ModuleAnalyzer

PACKAGE = "lpjax"
API_FOLDER = "api"

# Private module -> section title, in page order.
SECTIONS = {
    "_transforms": "Logit transforms",
    "_adaptive": "Adaptive LPL",
    "_isda": "ISDA",
    "_multilabel": "Multi-label LPL",
    "_solver": "LPL solver",
    "_signs_and_bounds": "Signs and bounds",
    "_authors": "The authors' scripts (an ablation)",
    "_meta": "Meta-LPL",
    "_losses": "Losses",
    "_priors": "Priors",
    "_diagnostics": "Diagnostics",
    "_checks": "Label checks",
}

# Page (docs/api/<page>.rst) -> the private modules it documents.
PAGES = {
    "transforms": ("_transforms", "_adaptive", "_isda", "_multilabel"),
    "lpl": ("_solver", "_signs_and_bounds", "_authors"),
    "meta": ("_meta",),
    "losses": ("_losses",),
    "priors": ("_priors",),
    "diagnostics": ("_diagnostics", "_checks"),
}


def _source_modules(package) -> dict[str, str]:
    """Public name -> the module ``__init__.py`` imports it from (``from pkg._m import x``)."""
    tree = ast.parse(Path(package.__file__).read_text(encoding="utf-8"))
    sources = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sources[alias.asname or alias.name] = node.module
    return sources


def _module_of(name: str, obj, sources: dict[str, str]) -> str:
    module = sources.get(name) or getattr(obj, "__module__", None) or PACKAGE
    return module if module.startswith(PACKAGE + ".") else PACKAGE


def _data_entry(name: str, module_name: str) -> list[str]:
    """A ``py:data`` entry: the assignment's source text, documented by its comment.

    The comment is a ``#:`` comment or string after the assignment (as autodoc reads
    them), else the block of ``#`` lines right above it, in the defining module.
    """
    module = importlib.import_module(module_name)
    source = inspect.getsource(module)
    value, doc = None, []
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value:
            value = ast.get_source_segment(source, node.value)
            lines = source.splitlines()[: node.lineno - 1]
            while lines and lines[-1].lstrip().startswith("#"):
                doc.insert(0, lines.pop().lstrip().lstrip("#:").strip())
    attr_docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
    doc = list(attr_docs.get(("", name), [])) or doc
    entry = [f".. py:data:: {name}", f"   :module: {PACKAGE}"]
    if value is not None and "\n" not in value:
        entry.append(f"   :value: {value}")
    entry.append("")
    entry += [f"   {line}" if line else "" for line in doc]
    return entry


def _definition_order(module_name: str) -> dict[str, int]:
    """Top-level name -> the line that defines it in the module."""
    if module_name == PACKAGE:
        return {}
    lines = {}
    for node in ast.parse(inspect.getsource(importlib.import_module(module_name))).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        else:
            continue
        for name in names:
            lines.setdefault(name, node.lineno)
    return lines


def _groups() -> dict[str, list[str]]:
    """Private module (full name) -> the public names it defines."""
    package = importlib.import_module(PACKAGE)
    sources = _source_modules(package)
    groups: dict[str, list[str]] = {}
    for name in package.__all__:
        obj = getattr(package, name)
        groups.setdefault(_module_of(name, obj, sources), []).append(name)
    placed = {module for modules in PAGES.values() for module in modules}
    unplaced = sorted(m for m in groups if m.rpartition(".")[2] not in placed)
    if unplaced:
        raise RuntimeError(f"docs/_ext/lpjax_api.py: give the modules {unplaced} a page in PAGES.")
    return groups


def api_rst(page: str) -> str:
    """The generated part of the API page ``page``, as reStructuredText."""
    package = importlib.import_module(PACKAGE)
    groups = {
        module: names
        for module, names in _groups().items()
        if module.rpartition(".")[2] in PAGES[page]
    }

    def order(module: str) -> tuple[int, str]:
        short = module.rpartition(".")[2]
        keys = list(SECTIONS)
        return (keys.index(short) if short in keys else len(keys), module)

    out = [".. currentmodule:: " + PACKAGE, ""]
    for module in sorted(groups, key=order):
        short = module.rpartition(".")[2]
        title = SECTIONS.get(short) or short.strip("_").replace("_", " ").capitalize()
        out += [title, "-" * len(title), ""]
        doc = inspect.getdoc(importlib.import_module(module)) if module != PACKAGE else None
        if doc:
            out += doc.splitlines() + [""]
        defined = _definition_order(module)
        for name in sorted(groups[module], key=lambda n: defined.get(n, float("inf"))):
            obj = getattr(package, name)
            # A class or function of lpjax's own; anything else (a constant, an alias
            # of another package's type such as ``TransformState = Any``) is data.
            own = (getattr(obj, "__module__", None) or "").startswith(PACKAGE + ".")
            if own and inspect.isclass(obj):
                out += [f".. autoclass:: {PACKAGE}.{name}", ""]
            elif own and callable(obj):
                out += [f".. autofunction:: {PACKAGE}.{name}", ""]
            else:
                out += _data_entry(name, module) + [""]
    return "\n".join(out) + "\n"


def _on_source_read(app, docname: str, source: list[str]) -> None:
    folder, _, page = docname.partition("/")
    if folder == API_FOLDER and page in PAGES:
        package = importlib.import_module(PACKAGE)
        app.env.note_dependency(package.__file__)  # re-read when the public names change
        source[0] += "\n" + api_rst(page)


# ``_solver.`` in a default shown as written (``max_inner_steps=_solver.DEFAULT_...``).
_MODULE_PREFIX = re.compile(r"(?<![\w.])(_[a-z]\w*)\.")


def _on_process_signature(app, what, name, obj, options, signature, return_annotation):
    """Drops private-module prefixes from signatures: the names are public in ``lpjax``."""
    if not signature or not name.startswith(PACKAGE + "."):
        return None

    def strip(match):
        return "" if f"{PACKAGE}.{match.group(1)}" in sys.modules else match.group(0)

    return _MODULE_PREFIX.sub(strip, signature), return_annotation


def setup(app):
    app.connect("source-read", _on_source_read)
    app.connect("autodoc-process-signature", _on_process_signature)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
