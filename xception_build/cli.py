"""``xbuild``: the command line. Commands are thin (parse, call the library, print); this is the
one place where errors become messages and exit codes.

Exit codes: 0 success; 1 a verification ran and failed; 2 a user error (bad spec, option, file
or checkpoint); 3 a backend this command needs is missing on this machine.

Commands from other packages (``exporters``: export, verify, bench) are found through the
``xbuild.commands`` entry-point group, so this package never imports them.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from .errors import BackendUnavailable, UserError, XBuildError
from .files import remove_empty, staging_dir

EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  a numeric verification ran and failed
  2  user error: bad spec, option, file or checkpoint
  3  a backend the command needs is missing here (TensorRT, a GPU)
  130  interrupted (Ctrl-C); outputs already in place are left as they were"""


@functools.cache  # scanning the installed distributions is slow; they do not change mid-command
def _plugin_entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group="xbuild.commands")}


class XBuildGroup(click.Group):
    """Loads plugin commands lazily and turns every ``XBuildError`` into ``error: ...`` + exit code."""

    def _plugins(self) -> dict[str, Any]:
        return _plugin_entry_points()

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self._plugins():
            entry_point = self._plugins()[cmd_name]
            try:
                command = entry_point.load()
            except ImportError as exc:
                # A broken optional install must not take `xbuild --help` down with it.
                return _unavailable_command(cmd_name, entry_point.value, exc)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except XBuildError as exc:
            click.echo(f"error: {exc.format()}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            # Not click's "Aborted!" with exit 1, which would read as "verification failed".
            click.echo("interrupted", err=True)
            ctx.exit(130)


def _unavailable_command(name: str, target: str, exc: ImportError) -> click.Command:
    def fail() -> None:
        raise BackendUnavailable(f"the '{name}' command could not be loaded ({target}): {exc}",
                                 hint="reinstall xception-build: pip install -e '.[cpu]'")

    return click.Command(name, callback=fail, help=f"(unavailable: {exc})",
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


@click.group(cls=XBuildGroup, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="xception-build", prog_name="xbuild")
def main() -> None:
    """Compile Xception-family networks from YAML specs; export and verify them.

    \b
    Examples:
      xbuild compile specs/xception.yaml
      xbuild compile specs/xception.yaml --set middle.repeat=4 --set head.num_classes=10
      xbuild validate specs/*.yaml
      xbuild export specs/xception.yaml --onnx --out build/
    """


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="PATH=VALUE",
    help="Override a spec value, e.g. --set middle.repeat=4 or --set entry.blocks[0].stride=1 (repeatable).")


def _write_outputs(out_dir: Path, files: dict[str, bytes | Any]) -> None:
    """Write into a temporary folder inside ``out_dir``, then move each file in by rename, so an
    interrupted run never leaves a half-written file in ``out_dir`` (``xception_build.files``)."""
    try:
        staging, created = staging_dir(out_dir, ".xbuild-")
    except OSError as exc:
        raise UserError(f"cannot write to the output folder: {exc.strerror or exc}", hint=f"--out {out_dir}") from exc
    installed = False
    try:
        for name, content in files.items():
            target = staging / name
            if callable(content):
                content(target)
            else:
                target.write_bytes(content)
        for name in files:
            os.replace(staging / name, out_dir / name)
        installed = True
    except OSError as exc:
        raise UserError(f"cannot write to the output folder: {exc.strerror or exc}", hint=f"--out {out_dir}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not installed:
            remove_empty(created)


@main.command("compile", epilog="""\b
Examples:
  xbuild compile specs/xception.yaml
  xbuild compile specs/xception41.yaml --set head.num_classes=10 --json
  xbuild compile specs/xception.yaml --weights timm_legacy_xception.pth --out build/xception
""")
@click.argument("spec", type=click.Path(path_type=Path))
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of a table.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="Write spec.resolved.yaml, summary.json and weights.safetensors here.")
@click.option("--weights", type=click.Path(path_type=Path),
              help="Import weights first (.safetensors or torch state dict; ours or a timm checkpoint).")
@click.option("--seed", default=0, show_default=True, help="Seed of the weight initialisation.")
def compile_command(spec: Path, overrides: Sequence[str], as_json: bool, out_dir: Path | None,
                    weights: Path | None, seed: int) -> None:
    """Validate SPEC, build the network and print a per-block summary.

    The table lists every block with its flow, module name, the spec entry (and line) it came
    from, output shape, parameters and multiply-accumulates, then the totals.
    """
    from .builder import build_model
    from .spec import dump_resolved_yaml, load_spec, spec_hash
    from .summary import format_table, summary_data
    from .weights import load_weights, save_weights

    loaded = load_spec(spec, overrides)
    model = build_model(loaded, seed=seed)
    if weights is not None:
        layout = load_weights(model, weights)
        click.echo(f"imported {weights} ({layout} layout)", err=True)
    data = summary_data(model.plan, str(spec))
    data["spec_hash"] = spec_hash(loaded)
    if out_dir is not None:
        _write_outputs(out_dir, {
            "spec.resolved.yaml": dump_resolved_yaml(loaded).encode(),
            "summary.json": (json.dumps(data, indent=2) + "\n").encode(),
            "weights.safetensors": lambda target: save_weights(model, target, {"spec_hash": data["spec_hash"]}),
        })
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(format_table(data))
    if out_dir is not None:
        click.echo(f"wrote {out_dir}/spec.resolved.yaml, summary.json, weights.safetensors", err=True)


@main.command("validate", epilog="""\b
Examples:
  xbuild validate specs/*.yaml
  xbuild validate my_variant.yaml --set middle.repeat=4
""")
@click.argument("specs", nargs=-1, required=True, type=click.Path(path_type=Path))
@set_option
def validate_command(specs: Sequence[Path], overrides: Sequence[str]) -> None:
    """Check specs without building them (for editors and CI).

    Loads, validates and plans each SPEC (shapes, parameters, MACs), printing `ok` or the error
    for each; exits 2 if any is invalid.
    """
    from .plan import plan_spec
    from .spec import load_spec

    failures = 0
    for path in specs:
        try:
            plan = plan_spec(load_spec(path, overrides))
        except XBuildError as exc:
            failures += 1
            click.echo(f"error: {exc.format()}", err=True)
            continue
        click.echo(f"ok: {path} ({plan.name}: {plan.total_params:,} parameters, "
                   f"{plan.total_macs / 1e9:.2f} GMACs)")
    if failures:
        raise UserError(f"{failures} of {len(specs)} spec{'s' if len(specs) > 1 else ''} invalid")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
