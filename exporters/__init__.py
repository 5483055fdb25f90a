"""Export half of xception-build: verified ONNX and TensorRT artifacts from a spec.

The layout is the pipeline (docs/ARCHITECTURE.md): ``contract`` (the I/O contract and the
vocabulary: artifact kinds, precisions, backend names), ``runner`` (the runner lifecycle and the
PyTorch runner), ``backends`` (the one registry of backends), ``onnx/`` (export and ONNX Runtime),
``tensorrt/`` (engines and their runner), ``verify/`` (checks, comparison, export folders, JUnit),
``manifest``, ``pipeline`` (``xbuild export`` as a call), ``bench/`` and ``cli``. This package
depends on ``xception_build``, never the reverse; onnxruntime and TensorRT are imported only
inside the functions that need them.

Library entry points::

    from exporters.pipeline import ExportRequest, run_export
    from exporters.verify.directory import verify_directory
    from exporters.verify.onnx_file import verify_onnx_file
"""
