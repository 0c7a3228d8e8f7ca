"""Exporters consume the canonical form."""
