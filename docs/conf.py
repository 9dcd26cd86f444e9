"""Sphinx configuration of the lpjax docs (build command: docs/README.md)."""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))  # import lpjax from this checkout

import lpjax  # noqa: E402

project = "lpjax"
author = "the lpjax authors"
copyright = "the lpjax authors"
release = lpjax.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    # KaTeX as the sphinxcontrib-katex wheel ships it (katex.min.js, auto-render.min.js
    # copied into _static): formulas render offline, with no CDN.
    "sphinxcontrib.katex",
    "myst_parser",
    "lpjax_api",  # _ext/lpjax_api.py: writes the API page from lpjax.__all__
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# Only pages: the study runs (config.json, results.json) and the build output are not.
exclude_patterns = ["_build", "results/**/runs/**", "Thumbs.db", ".DS_Store"]

# Google-style docstrings (Args:, Returns:, References:, Example::).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# The Attributes: sections say each field's shape and dtype; the annotations (jax.Array)
# would add only a type line per field, printed as jax.jaxlib._jax.Array.
napoleon_attr_annotations = False
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True
# Show ArrayLike by name, not as the union of the eight types it stands for, and
# jax.Array as itself, not as its implementation class jax.jaxlib._jax.Array.
autodoc_type_aliases = {
    "jax.typing.ArrayLike": "jax.typing.ArrayLike",
    "jax.Array": "jax.Array",
}


def _show_aliases_in_unions() -> None:
    """Sphinx prints an alias inside a union (``float | ArrayLike``) as its repr,
    ``TypeAliasForwardRef('jax.typing.ArrayLike')`` (sphinx-doc/sphinx#13229): print its name."""
    from sphinx.util.inspect import TypeAliasForwardRef

    TypeAliasForwardRef.__repr__ = lambda self: self.name


_show_aliases_in_unions()

myst_heading_anchors = 3

# MathML output needs neither KaTeX's stylesheet nor its fonts (which the wheel does not
# ship; the extension's default stylesheet is a CDN address): the page loads only local files.
html_static_path = ["_static"]
katex_css_path = "katex-offline.css"
katex_options = "output: 'mathml', throwOnError: false"

# Every cross-reference to lpjax must resolve; other packages' docs are not linked
# (the build is offline, no intersphinx), so references to them are left as text.
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(jax|jaxlib|numpy|optax|collections|typing)(\..*)?")]

html_theme = "furo"
html_title = f"lpjax {release}"


class _LinksOutsideTheSite:
    """Drops MyST's "missing cross-reference" warning for links to files of the repository
    outside ``docs/`` (``../experiments/README.md``, ``../benchmarks/RESULTS.md``, folders of
    runs): the pages are read on the repository too, where those links work; the site
    renders them as plain links. A missing page inside ``docs/`` still fails the build."""

    def filter(self, record) -> bool:
        if getattr(record, "type", None) != "myst" or getattr(record, "subtype", "") != (
            "xref_missing"
        ):
            return True
        message = record.getMessage()
        outside = f"'{DOCS.parent}/" in message and f"'{DOCS}/" not in message
        return not (outside or "target not found: '../" in message)


def setup(app):
    import logging

    def install(app):
        for handler in logging.getLogger("sphinx").handlers:
            handler.filters.insert(0, _LinksOutsideTheSite())

    app.connect("builder-inited", install)
