"""The lcpipe version: in cache keys, manifests and the exported ONNX (a module of its own, so those
modules need not import the package face, which imports the runner)."""

__version__ = "0.1.0"
