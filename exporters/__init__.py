"""Exporters: turn a store entry's PyTorch checkpoint into fast formats, each proven against PyTorch.

``python -m exporters <task> --format onnx|tensorrt [--tag TAG]`` adds the file to the same store entry and
records its checksum and the parity result in the entry's metadata.
"""
