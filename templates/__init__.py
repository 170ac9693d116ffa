"""Templates of the web UI, shipped as the package kb.templates.

A regular package (not a namespace one) so setuptools editable installs can map it from this
top-level directory; kb.web.template_root() reads it through importlib.resources.
"""
