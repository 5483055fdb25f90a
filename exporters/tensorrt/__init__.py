"""TensorRT: engines built from the exported ONNX (:mod:`.engine`) and the runner that executes
them (:mod:`.runtime`). TensorRT is imported inside the functions that need it."""
