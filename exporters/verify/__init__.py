"""Verification: every artifact run on every backend here and compared with the PyTorch model.

Running and comparing are separate steps (as in Polygraphy): :mod:`.checks` runs the reference
and the artifacts' runners on the same seeded inputs and collects a :class:`.checks.VerificationResult`;
:mod:`.compare` judges one output against the reference. :mod:`.directory` re-checks an export
folder against its manifest, :mod:`.onnx_file` a user-brought ``.onnx``; :mod:`.junit` writes
the result for CI dashboards, :mod:`.report` as a self-contained HTML page (``report.html``) and
:mod:`.summary` as markdown for CI job summaries.
"""
