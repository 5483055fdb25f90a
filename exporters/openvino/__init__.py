"""OpenVINO: the exported ONNX turned into OpenVINO IR (``model.xml`` + ``model.bin``), and its runner."""
