"""Example model plugins that ship with fedpharma (``[model] plugin = "dmpnn"`` or
``"emr-signal"``); each module is imported only when a recipe names it."""
