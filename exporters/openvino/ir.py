"""ONNX -> OpenVINO IR (``.xml`` + ``.bin``), and what an IR says about itself.

The IR is made by OpenVINO's own ONNX frontend (``Core.read_model`` on the exported file) and
written with ``openvino.save_model``, so it is exactly the graph the ONNX artifact holds: the same
BatchNorm-folded fp32 weights, or the same QDQ int8 nodes (OpenVINO turns each QDQ pair into a
FakeQuantize and runs the convolution in int8). ``save_model`` is told not to compress weights to
fp16 (its default), which would make the fp32 IR a different model from the verified ONNX.

No telemetry: ``import openvino`` itself starts ``openvino-telemetry`` (in
``openvino.tools.ovc``), which writes a client id under ``~/intel`` and reports the import to
Google Analytics unless the user opted out or ``CI=true``; ``convert_model`` reports more. This
tool never touches the network, so it imports openvino only through :func:`load_openvino`, which
makes ``openvino_telemetry`` unimportable first: OpenVINO then falls back to its own no-op stub
(``openvino.tools.ovc.telemetry_stub``). ``convert_model`` is not used at all.

The ONNX file's ``xbuild.*`` metadata travels into the IR's ``rt_info`` (section ``framework``),
and the IR records the OpenVINO release that wrote it (``OpenVINO Runtime``): the runner refuses an
IR from another release with one line, as the engine of another TensorRT version is refused.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path, PurePath
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

from exporters.contract import META_BATCH_PROFILE, META_PRECISION, META_SPEC_HASH, META_SPEC_NAME
from xception_build.errors import BackendUnavailable, UserError

if TYPE_CHECKING:
    import openvino as ov

INSTALL_HINT = "pip install 'xception-build[cpu]' (or 'xception-build[openvino]'), which installs the openvino package"
#: the rt_info key save_model writes the OpenVINO release under
RUNTIME_KEY = "OpenVINO Runtime"
PathT = TypeVar("PathT", bound=PurePath)
_RELEASE = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


def load_openvino() -> ModuleType:
    """``import openvino`` without its usage telemetry (see the module docstring): unless the
    process imported ``openvino_telemetry`` itself, it is marked unimportable before openvino loads.
    Raises ImportError like the import does."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]  # None: "cannot be imported"
    import openvino

    return openvino


@functools.cache
def openvino_core() -> ov.Core:
    """The process's one ``openvino.Core``: creating one loads the device plugins, and every IR is
    read, written and compiled through it."""
    return load_openvino().Core()


@functools.cache
def openvino_unavailable() -> str | None:
    """Why OpenVINO cannot run here (one line), or ``None`` when it can (asked once per process:
    verification asks for every artifact)."""
    try:
        load_openvino()
    except ImportError:
        return f"openvino is not installed: {INSTALL_HINT}"
    except Exception as exc:  # a broken install: the shared library does not load
        return f"openvino does not import here ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    if "CPU" not in openvino_core().available_devices:
        return "OpenVINO's CPU plugin is not available in this openvino install"
    return None


def require_openvino() -> None:
    """Raise :class:`BackendUnavailable` (exit 3) when OpenVINO cannot run here."""
    reason = openvino_unavailable()
    if reason is not None:
        raise BackendUnavailable(reason)


def release_of(version: str) -> tuple[int, int, int] | None:
    """``2026.4.1`` of ``2026.4.1-22982-e213a147257-releases/2026/4``; None when it is not a version."""
    match = _RELEASE.match(version.strip())
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def installed_version() -> str:
    return str(load_openvino().get_version())


def weights_path(xml: PathT) -> PathT:
    """The ``.bin`` an IR's ``.xml`` reads its weights from (same name, beside it)."""
    return xml.with_suffix(".bin")


def write_ir(onnx_path: Path, xml: Path) -> None:
    """Write the IR of the ONNX file at ``onnx_path`` to ``xml`` and its ``.bin`` beside it."""
    require_openvino()
    model = openvino_core().read_model(str(onnx_path))
    load_openvino().save_model(model, str(xml), compress_to_fp16=False)


def read_ir(xml: Path) -> ov.Model:
    """Read an IR, or raise one clean :class:`UserError` saying why it cannot be run here: a missing
    ``.bin``, an IR written by another OpenVINO release, a file OpenVINO cannot parse."""
    if not xml.is_file():
        raise UserError(f"{xml}: no such OpenVINO IR file")
    weights = weights_path(xml)
    if not weights.is_file():
        raise UserError(f"{xml}: its weights file {weights.name} is missing (an IR is the .xml and the .bin "
                        "beside it)", hint="copy both files, or re-export with xbuild export --openvino")
    try:
        model = openvino_core().read_model(str(xml), str(weights))
    except RuntimeError as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), "unknown error")
        raise UserError(f"{xml}: OpenVINO {installed_version()} cannot read this IR: {first[:300]}") from exc
    written = str(model.get_rt_info(RUNTIME_KEY).astype(str)) if model.has_rt_info(RUNTIME_KEY) else ""
    here = installed_version()
    if release_of(written) is None:
        raise UserError(f"{xml}: the IR does not record the OpenVINO release that wrote it; it was not "
                        "written by xbuild export --openvino", hint="re-export it with xbuild export --openvino")
    if release_of(written) != release_of(here):
        raise UserError(f"{xml}: written by OpenVINO {written.split('-')[0]}, this is OpenVINO {here.split('-')[0]}: "
                        "the verified numbers are those of the release that wrote it",
                        hint="re-export with this OpenVINO (xbuild export --openvino), or verify where the "
                             "release that wrote it is installed")
    return model


def ir_metadata(model: ov.Model) -> dict[str, str]:
    """The ``xbuild.*`` metadata the ONNX file carried into the IR's ``rt_info``."""
    return {key: str(model.get_rt_info(["framework", key]).astype(str))
            for key in (META_PRECISION, META_BATCH_PROFILE, META_SPEC_NAME, META_SPEC_HASH)
            if model.has_rt_info(["framework", key])}
