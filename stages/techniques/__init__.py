"""The single-change techniques: one module each (the catalog in catalog.py, their options in
options/), and what they share."""
