"""The export's I/O contract and vocabulary, shared by every exporters module.

What an artifact looks like from outside (input and output names, the batch profile it accepts,
the metadata keys it carries) and the words the exporters use for artifact kinds, precisions,
devices and backends. It imports nothing else of the package, so any two exporters modules can
depend on it without depending on each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from xception_build.errors import UserError

#: The name every exported graph uses for its single input and output.
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

#: The row of everything after the last spec block in the per-block tables (``--explain``,
#: ``bench --blocks``): a flow's final activation, pooling and the classifier.
HEAD = "head"

#: What a manifest lists. Model artifacts are the ones a backend runs.
#: An OpenVINO IR is two files: ``openvino-ir`` (the .xml a backend runs) and its ``openvino-weights`` (.bin).
ArtifactKind = Literal["onnx", "tensorrt-plan", "tensorrt-sidecar", "openvino-ir", "openvino-weights", "weights",
                       "spec"]
ModelArtifactKind = Literal["onnx", "tensorrt-plan", "openvino-ir"]


def model_kind(kind: ArtifactKind) -> ModelArtifactKind | None:
    """``kind`` when a backend runs artifacts of it, else ``None`` (weights, spec, sidecars)."""
    if kind == "onnx" or kind == "tensorrt-plan" or kind == "openvino-ir":
        return kind
    return None


#: Numeric precision of an artifact's weights and compute (its interface stays fp32).
Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
#: The precision a backend computed an artifact's numbers at, which picks the tolerance they are
#: judged by: the artifact's own, or another where the backend runs it so (OpenVINO runs an fp32
#: file at bf16 on CPUs with AMX or AVX512-BF16)
ComputePrecision = Literal["fp32", "bf16", "fp16", "int8"]
COMPUTE_PRECISIONS: tuple[ComputePrecision, ...] = get_args(ComputePrecision)

#: ``--openvino-precision``: OpenVINO's inference precision hint; ``auto`` leaves OpenVINO's own
#: choice (bf16 on CPUs with AMX or AVX512-BF16, f32 elsewhere)
OpenVINOPrecision = Literal["auto", "f32", "bf16"]
OPENVINO_PRECISIONS: tuple[OpenVINOPrecision, ...] = get_args(OpenVINOPrecision)

#: int8 activations: symmetric int8 (TensorRT reads it) or asymmetric uint8 (ONNX Runtime only)
Int8Activations = Literal["symmetric", "asymmetric"]
#: What ``--int8-activations`` takes: a scheme, or ``auto`` for the one the file's consumer runs fastest
Int8ActivationsChoice = Literal["auto", "symmetric", "asymmetric"]
INT8_ACTIVATIONS_CHOICES: tuple[Int8ActivationsChoice, ...] = get_args(Int8ActivationsChoice)


def int8_activations_for(choice: Int8ActivationsChoice, *, tensorrt: bool, openvino: bool = False) -> Int8Activations:
    """The scheme an int8 file gets: ``auto`` is symmetric where TensorRT builds from the file (it
    reads only zero point 0) or an OpenVINO IR is made from it (its CPU plugin runs symmetric int8
    activations fastest: docs/BENCHMARKS.md), and asymmetric otherwise, which ONNX Runtime's CPU
    kernels run faster (every ReLU folds into the uint8 range and the residual adds stay in int8)."""
    if choice == "auto":
        return "symmetric" if tensorrt or openvino else "asymmetric"
    return choice

Device = Literal["cpu", "cuda"]

#: Every backend, by the one name used in options, reports, manifests and docs.
BackendName = Literal["pytorch-cpu", "pytorch-cuda", "pytorch-compile-cpu", "pytorch-compile-cuda",
                      "onnxruntime-cpu", "onnxruntime-cuda", "openvino-cpu", "tensorrt"]
BACKEND_NAMES: tuple[BackendName, ...] = get_args(BackendName)

# Keys of the ONNX ``metadata_props`` an export writes (docs/EXPORT.md lists them all).
META_SPEC_NAME = "xbuild.spec_name"
META_SPEC_HASH = "xbuild.spec_hash"
META_PRECISION = "xbuild.precision"
META_BATCH_PROFILE = "xbuild.batch_profile"
META_INT8_ACTIVATIONS = "xbuild.int8_activations"
META_BLOCKS = "xbuild.blocks"  # JSON: each spec block's output tensor and nodes (exporters.onnx.blocks)


@dataclass(frozen=True)
class RunSettings:
    """How an artifact backend's runner is set up: CPU threads (0: the runtime's default) and, for
    OpenVINO, its inference precision hint. One object, so a new runtime setting is one field."""

    threads: int = 0
    openvino_precision: OpenVINOPrecision = "auto"


DEFAULT_RUN_SETTINGS = RunSettings()


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes an artifact accepts: TensorRT's MIN:OPT:MAX optimization profile."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise UserError(f"batch profile {self}: need 1 <= MIN <= OPT <= MAX")

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """``MIN:OPT:MAX``, one size ``N`` (``N:N:N``) or a list ``N,N,...`` (see :func:`parse_batches`)."""
        return parse_batches(text).profile

    @classmethod
    def of_sizes(cls, sizes: Sequence[int]) -> BatchProfile:
        """The profile that covers ``sizes``: smallest, the middle one (the upper of two), largest."""
        ordered = sorted(set(sizes))
        return cls(ordered[0], ordered[len(ordered) // 2], ordered[-1])

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def contains(self, batch: int) -> bool:
        return self.min <= batch <= self.max

    def check_batches(self) -> tuple[int, ...]:
        """The batch sizes verification runs: min, opt and max, each once."""
        return tuple(sorted({self.min, self.opt, self.max}))

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class BatchSelection:
    """What ``--batch`` said, in every command: the sizes to run and the profile that covers them."""

    sizes: tuple[int, ...]
    profile: BatchProfile


_BATCH_HELP = "expected MIN:OPT:MAX (e.g. 1:8:16), one batch size N, or sizes N,N,... (e.g. 1,8,64)"


def parse_batches(text: str) -> BatchSelection:
    """``--batch`` as every command reads it.

    ``MIN:OPT:MAX`` is a profile (the sizes run are MIN, OPT and MAX); ``N`` is one size; ``N,N,...``
    lists sizes (the profile spans them, OPT the middle one).
    """
    def integers(parts: list[str]) -> list[int]:
        try:
            return [int(p) for p in parts]
        except ValueError:
            raise UserError(f"--batch {text!r}: {_BATCH_HELP}") from None

    stripped = text.strip()
    if ":" in stripped:
        values = integers(stripped.split(":"))
        if len(values) != 3:
            raise UserError(f"--batch {text!r}: {_BATCH_HELP}")
        profile = BatchProfile(*values)
        return BatchSelection(profile.check_batches(), profile)
    sizes = integers([p for p in stripped.split(",") if p.strip()]) if stripped else []
    if not sizes:
        raise UserError(f"--batch {text!r}: {_BATCH_HELP}")
    if any(size < 1 for size in sizes):
        raise UserError(f"--batch {text!r}: batch sizes must be positive integers")
    ordered = tuple(sorted(set(sizes)))
    return BatchSelection(ordered, BatchProfile.of_sizes(ordered))


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one input; ``None`` marks the (dynamic) batch dimension."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]
