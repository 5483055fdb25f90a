"""Is an export folder what its manifest says? The manifest's rules, every path, every hash.

The rules (docs/EXPORT.md, "What a green verdict means"):

* the manifest lists the spec, the weights and at least one model artifact of a known kind, each
  path once;
* every path is relative and resolves inside the folder: no absolute path, no ``..``, no symlink
  leading out (such a path is never read);
* every listed artifact is hash-checked. A diagnosis says only what is known: ``missing``;
  ``swapped`` (its bytes are another listed artifact's); ``a different model`` (an ONNX whose own
  metadata names another spec or spec hash); otherwise ``changed`` (size and/or hash differ).

Files in the folder that look like artifacts but are not listed are reported (nothing checked
them). Each finding is an :class:`ArtifactCheck`; a failed one makes the verdict "failed".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from exporters.contract import META_SPEC_HASH, META_SPEC_NAME, model_kind
from exporters.manifest import MANIFEST_NAME, Artifact, Manifest
from exporters.openvino.ir import weights_path
from xception_build.files import sha256_file

#: what an artifact of an export looks like, for files the manifest does not list
ARTIFACT_SUFFIXES = (".onnx", ".plan", ".engine", ".xml", ".bin", ".safetensors", ".pt", ".pth", ".yaml", ".yml")


@dataclass(frozen=True)
class ArtifactCheck:
    """Whether one listed artifact (or the manifest itself) is what it should be; ``problem`` is
    ``None`` when it is."""

    path: str
    problem: str | None

    @property
    def passed(self) -> bool:
        return self.problem is None


def unsafe_path(directory: Path, relative: str) -> str | None:
    """Why ``relative`` may not be read as a file of ``directory`` (None when it may)."""
    if not relative or relative in (".", ""):
        return "an empty path"
    if PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).is_absolute() or \
            PureWindowsPath(relative).drive:
        return "an absolute path; manifest paths are relative to the export folder"
    if ".." in PurePosixPath(relative.replace("\\", "/")).parts:
        return "a path with '..'; manifest paths stay inside the export folder"
    try:
        resolved = (directory / relative).resolve()
        resolved.relative_to(directory.resolve())
    except ValueError:
        return "a symlink that leads out of the export folder"
    except (OSError, RuntimeError):  # a symlink loop
        return "a path that cannot be resolved (a symlink loop?)"
    return None


def _ir_weights(manifest: Manifest, xml: str) -> tuple[str, bool]:
    """The ``.bin`` the IR ``xml`` reads, and whether the manifest lists it as its weights."""
    weights = str(weights_path(PurePosixPath(xml)))
    return weights, any(a.path == weights and a.kind == "openvino-weights" for a in manifest.artifacts)


def companion_files(manifest: Manifest, path: str) -> list[str]:
    """The listed files a model artifact reads besides itself (an IR's ``.bin``): it can be run only
    when they pass their checks too."""
    art = next((a for a in manifest.artifacts if a.path == path), None)
    if art is None or art.kind != "openvino-ir":
        return []
    weights, listed = _ir_weights(manifest, path)
    return [weights] if listed else []


def manifest_problems(manifest: Manifest) -> list[str]:
    """What the manifest lacks to be verifiable at all."""
    problems = []
    kinds = [a.kind for a in manifest.artifacts]
    if "spec" not in kinds:
        problems.append("lists no spec (spec.resolved.yaml): there is nothing to rebuild the reference from")
    if "weights" not in kinds:
        problems.append("lists no weights (weights.safetensors): there is nothing to rebuild the reference from")
    if not any(model_kind(kind) is not None for kind in kinds):
        problems.append("lists no model artifact (onnx, openvino-ir or tensorrt-plan): there is nothing to verify")
    paths = [a.path for a in manifest.artifacts]
    for art in manifest.artifacts:
        if art.kind == "openvino-ir":
            weights, listed = _ir_weights(manifest, art.path)
            if not listed:
                problems.append(f"lists the OpenVINO IR {art.path} without its weights file {weights} "
                                "(openvino-weights): the IR cannot be checked whole")
    repeated = sorted({p for p in paths if paths.count(p) > 1})
    if repeated:
        problems.append(f"lists {', '.join(repeated)} more than once")
    return problems


def check_folder(directory: Path, manifest: Manifest) -> list[ArtifactCheck]:
    """The manifest's rules, then every listed artifact's path and hash."""
    checks = [ArtifactCheck(MANIFEST_NAME, problem) for problem in manifest_problems(manifest)]
    by_hash = {art.sha256: art.path for art in manifest.artifacts}
    for art in manifest.artifacts:
        unsafe = unsafe_path(directory, art.path)
        if unsafe is not None:
            checks.append(ArtifactCheck(art.path, f"{unsafe}: not read"))
            continue
        checks.append(ArtifactCheck(art.path, _diagnose(directory / art.path, art, manifest, by_hash)))
    return checks


def _diagnose(path: Path, art: Artifact, manifest: Manifest, by_hash: dict[str, str]) -> str | None:
    if not path.is_file():
        return "missing"
    digest = sha256_file(path)
    if digest == art.sha256:
        return None
    if by_hash.get(digest, art.path) != art.path:
        return f"swapped: its contents are what the manifest records for {by_hash[digest]}"
    if art.kind in ("onnx", "openvino-ir"):
        other = _other_model(path, art, manifest)
        if other is not None:
            return other
    size = path.stat().st_size
    sizes = f"{size:,} bytes, the manifest records {art.bytes:,}" if size != art.bytes else "same size"
    return f"changed: {sizes}; sha256 {digest[:12]}..., the manifest records {art.sha256[:12]}..."


def _model_metadata(path: Path, art: Artifact) -> dict[str, str] | None:
    """The xbuild metadata a model file carries (an ONNX's ``metadata_props``, an IR's ``rt_info``)."""
    if art.kind == "openvino-ir":  # the IR's rt_info as the text writes it, without running OpenVINO
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        return {key: value for key, value in _IR_META.findall(text)}
    import onnx

    from exporters.onnx.export import metadata_of

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX at all (any protobuf or I/O error): a plain "changed" then
        return None
    return metadata_of(proto)


_IR_META = re.compile(r'<(xbuild\.spec_(?:name|hash)) value="([^"]*)"')


def _other_model(path: Path, art: Artifact, manifest: Manifest) -> str | None:
    """``a different model: ...`` when the model file's own metadata names another spec or spec hash."""
    meta = _model_metadata(path, art)
    if meta is None:
        return None
    name, digest = meta.get(META_SPEC_NAME), meta.get(META_SPEC_HASH)
    expected_name = str(manifest.spec.resolved.get("name", "?"))
    if (name is None and digest is None) or digest == manifest.spec.hash:
        return None
    return (f"a different model: its metadata says it was exported from spec {name!r} "
            f"(spec hash {(digest or '?')[:12]}...), this export is of {expected_name!r} "
            f"(spec hash {manifest.spec.hash[:12]}...)")


def unlisted_files(directory: Path, manifest: Manifest) -> list[str]:
    """Files that look like artifacts but are not in the manifest (sidecars of listed plans aside)."""
    listed = {a.path for a in manifest.artifacts} | {MANIFEST_NAME, "timing.cache"}
    return sorted(p.name for p in directory.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name not in listed
                  and p.suffix.lower() in ARTIFACT_SUFFIXES)
