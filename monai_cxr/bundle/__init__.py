"""Bundles for the grid cells: the template's Python parts, generation and execution.

The template bundle (``bundles/cxr_resolution``) names the classes here with ``_target_``;
``generate`` fills the template with one cell's values; ``executor`` runs the cells
through the stock MONAI bundle runner, each in its own process.
"""
