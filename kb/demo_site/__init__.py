"""The bundled Northside Skin Clinic demo site (static WordPress-like files), served by `kb.demo`.

A data package rather than code: it exists so `importlib.resources.files("kb.demo_site")` finds the
files in editable and wheel installs alike.
"""
