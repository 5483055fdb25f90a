"""``DIR/manifest.json``: what an export wrote, how it was made, and how it was verified.

CI re-checks an export later with ``xbuild verify DIR``; the manifest is what it checks against:
every artifact with its sha256 and size, the spec hash and resolved spec, the versions of the tool
and libraries, and the verification settings and metrics. It is written last, atomically, so a
directory with a manifest is a complete export. A reader that finds ``format_version`` newer than
it knows stops with a clean error instead of misreading fields.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError, field_validator

from exporters.contract import ArtifactKind, ComputePrecision, Precision
from exporters.verify.compare import Tolerance, bound_problem
from xception_build.errors import UserError
from xception_build.files import atomic_write, sha256_file

#: 3: tolerances per compute precision (bf16 too), int8 judged by bounds on held-out images
#: (confident_margin, confidence; min_cosine and min_top5 may be unset), the verdict word;
#: 2 had fixed thresholds (int8: 99 % agreement); 1 absolute atol/rtol
FORMAT_VERSION = 3
#: why a manifest of an older format cannot be re-verified by this xbuild
_OLDER_FORMATS = {
    1: "records absolute tolerances (atol/rtol) that this xbuild no longer judges by",
    2: "records fixed-threshold tolerances (int8: 99 % top-1 agreement on every held-out image) that this xbuild "
       "no longer judges by: it judges int8 by bounds on the accuracy drop and on agreement where the reference "
       "is confident",
}
MANIFEST_NAME = "manifest.json"


class Artifact(BaseModel):
    """One file of an export; ``path`` is relative to the export directory."""

    model_config = ConfigDict(frozen=True)

    path: str
    kind: ArtifactKind
    sha256: str
    bytes: int
    precision: Precision | None = None


class _Section(BaseModel):
    """A manifest section: the fields a reader relies on are typed; unknown keys are kept as they are.

    Fields are declared in the order the exporter writes them, so a written manifest reads the same.
    """

    model_config = ConfigDict(frozen=True, extra="allow")


class SpecInfo(_Section):
    """``spec``: the hash ``xbuild verify`` compares with, and where the spec came from."""

    hash: str
    source: Any = None
    overrides: Any = None
    resolved: dict[str, Any] = Field(default_factory=dict)  # the resolved spec as data


class TensorInfo(_Section):
    """An artifact's input or output: name, shape (``"N"`` for a dynamic batch) and dtype."""

    name: str
    shape: list[int | str]
    dtype: str


class ModelInfo(_Section):
    """``model``: input/output names and shapes, preprocessing, params."""

    input: TensorInfo | None = None
    output: TensorInfo | None = None
    input_size: list[PositiveInt] = Field(min_length=1)  # (C, H, W): what the reference is fed
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: str | None = None
    crop_pct: float | None = None
    num_classes: int | None = None
    params: int | None = None


class DataInfo(_Section):
    """``verification.data``: the images an int8 artifact was calibrated and judged on."""

    data: str  # the folder, or "synthetic"
    calibration_images: PositiveInt
    evaluation_images: PositiveInt
    seed: NonNegativeInt = 0
    description: str = ""
    fingerprint: str = ""  # sha256 of the held-out images as fed


class VerificationInfo(_Section):
    """``verification``: the settings a re-verification repeats, and the results of the export's run."""

    reference: Any = None
    seed: NonNegativeInt = 0
    batches: list[PositiveInt] = Field(min_length=1)
    rule: str = ""  # the pass rule the tolerances are bounds of (exporters.verify.compare.RULE)
    tolerances: dict[ComputePrecision, Tolerance]  # by the precision the numbers were computed at
    data: DataInfo | None = None
    judge_synthetic: bool = False  # int8 on synthetic images: judge agreement instead of "not judged"
    verdict: str | None = None  # passed, failed or not judged (exporters.verify.checks.Verdict)
    passed: Any = None
    results: Any = None
    not_run: Any = None
    notes: Any = None

    @field_validator("tolerances")
    @classmethod
    def _valid_tolerances(cls, tolerances: dict[str, Tolerance]) -> dict[str, Tolerance]:
        for precision, tol in tolerances.items():
            for name, value in tol.to_dict().items():
                if value is not None and (problem := bound_problem(name, value)) is not None:
                    raise ValueError(f"{precision}.{name} is {value}: {problem}")
        return tolerances


class Manifest(BaseModel):
    """The manifest file's schema (format version :data:`FORMAT_VERSION`)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    format_version: int
    tool: dict[str, str]
    versions: dict[str, str]
    spec: SpecInfo  # hash, source, overrides, resolved (the resolved spec as data)
    model: ModelInfo  # input/output names and shapes, preprocessing, params
    export: dict[str, Any]  # exporter, opset, batch profile, precision, TensorRT settings
    artifacts: list[Artifact]
    verification: VerificationInfo  # seed, batches, tolerances, results, skipped backends

    def artifact(self, kind: ArtifactKind, precision: Precision | None = None) -> Artifact | None:
        for art in self.artifacts:
            if art.kind == kind and (precision is None or art.precision == precision):
                return art
        return None


def describe(directory: Path, name: str, kind: ArtifactKind, precision: Precision | None = None) -> Artifact:
    path = directory / name
    return Artifact(path=name, kind=kind, sha256=sha256_file(path), bytes=path.stat().st_size,
                    precision=precision)


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    path = Path(directory) / MANIFEST_NAME
    atomic_write(path, (manifest.model_dump_json(indent=2) + "\n").encode())
    return path


def read_manifest(directory: str | Path) -> Manifest:
    """Load and validate ``DIR/manifest.json``; every problem is one clean :class:`UserError`."""
    path = Path(directory) / MANIFEST_NAME
    if Path(directory).exists() and not Path(directory).is_dir():
        raise UserError(f"{directory}: is a file, expected an export folder (give --onnx FILE for an .onnx)")
    if not Path(directory).is_dir():
        raise UserError(f"{directory}: no such export folder")
    if not path.is_file():
        raise UserError(f"{path}: missing; {directory} is not a complete export",
                        hint="run `xbuild export SPEC --out DIR` (an interrupted export writes no manifest)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON manifest ({exc})") from exc
    version = data.get("format_version") if isinstance(data, dict) else None
    if not isinstance(version, int):
        raise UserError(f"{path}: no integer format_version; not an xbuild manifest")
    if version < FORMAT_VERSION:
        why = _OLDER_FORMATS.get(version, "is older than this xbuild reads")
        raise UserError(f"{path}: manifest format version {version} {why}",
                        hint="re-export the folder with this xbuild")
    if version > FORMAT_VERSION:
        raise UserError(f"{path}: manifest format version {version} is newer than this xbuild reads "
                        f"(up to {FORMAT_VERSION})", hint="upgrade xception-build to verify this export")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{path}: malformed manifest at {where}: {first['msg']}") from exc


def tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("xception-build")
    except PackageNotFoundError:
        import xception_build

        return str(getattr(xception_build, "__version__", "0+unknown"))


def library_versions() -> dict[str, str]:
    """Versions of everything that shapes an artifact; absent libraries are left out."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "xception-build": tool_version()}
    for name in ("torch", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "openvino", "numpy", "tensorrt"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
