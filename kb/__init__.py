"""kb: a searchable dermatology knowledge base.

Only the version lives here, so `from kb import __version__` (settings, the CLI, the OpenAPI document) imports
nothing else; the web app is `kb.web.create_app`.
"""

__version__ = "0.1.0"
