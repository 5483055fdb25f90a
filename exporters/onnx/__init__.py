"""ONNX: the PyTorch model exported to one self-contained ``.onnx`` file (:mod:`.export`), and
ONNX Runtime, the backend that runs it (:mod:`.runtime`)."""
