# Sphinx configuration for the holysheep-trio documentation site (built with -W: warnings are errors).
from __future__ import annotations

project = "holysheep-trio"
author = "the holysheep-trio developers"
copyright = "2026, the holysheep-trio developers"  # noqa: A001 - Sphinx's own setting name

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinxcontrib_trio",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
html_theme = "furo" if __import__("importlib.util").util.find_spec("furo") else "alabaster"
html_title = "holysheep-trio"
