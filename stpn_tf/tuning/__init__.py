"""Localization settings scored on saved raw outputs, and the search that picks them."""
