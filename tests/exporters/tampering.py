"""Edits a careless or hostile user makes to an exported file, shared by the tests that catch them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def drift_block(source: Path, target: Path, module: str) -> None:
    """One weight tensor of one block off by 1 %, found through the export's block map."""
    from exporters.onnx.blocks import read_blocks

    proto = onnx.load(source)
    block = next(b for b in read_blocks(proto) if b.module == module)
    inputs = {i for n in proto.graph.node if n.name in block.nodes for i in n.input}
    tensor = max((t for t in proto.graph.initializer if t.name in inputs and len(t.dims) == 4),
                 key=lambda t: int(np.prod(t.dims)))
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(1.01), tensor.name))
    onnx.save(proto, target)
