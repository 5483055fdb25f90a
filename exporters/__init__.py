"""Export half of xception-build: verified ONNX and TensorRT artifacts from a spec.

Layout (one module per stage, after Polygraphy): ``onnx_export`` (model -> .onnx),
``tensorrt_backend`` (.onnx -> engine, and its runner), ``runners`` (one ``infer`` signature per
backend), ``compare`` (outputs -> metrics report), ``verify`` (runs and compares), ``manifest``
(what was written and how it was checked), ``pipeline`` (``xbuild export`` as a call), ``junit``
and ``cli``. This package depends on ``xception_build``, never the reverse; onnxruntime and
TensorRT are imported only inside the functions that need them.

Library entry points::

    from exporters.pipeline import ExportRequest, run_export
    from exporters.verify import verify_directory, verify_onnx_file
"""
