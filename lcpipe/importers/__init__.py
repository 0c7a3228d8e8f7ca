"""Importers: turn a weights file into the canonical form (ModelSpec + named numpy tensors)."""
