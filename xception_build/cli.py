"""``xbuild``: the command line. Commands are thin (parse, call the library, print); this is the
one place where errors become messages and exit codes.

Exit codes: 0 success; 1 a verification ran and failed; 2 a user error (bad spec, option, file
or checkpoint); 3 a backend this command needs is missing on this machine; 4 the checks ran, but
accuracy was not judged (synthetic data); 130 interrupted.
Every error, ours or click's own usage errors, prints as ``error: <message>`` (plus a ``hint:``
line) on stderr. A closed stdout (``xbuild verify DIR | head -1``) is not an error: the rest of
the output is dropped and the exit code is still the command's own.

Commands from other packages (``exporters``: export, verify, bench) are found through the
``xbuild.commands`` entry-point group, so this package never imports them.
"""

from __future__ import annotations

import functools
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from .errors import BackendUnavailable, UserError, XBuildError, error_report
from .files import check_output_folder, staged_output

EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  a numeric verification ran and failed
  2  user error: bad spec, option, file or checkpoint
  3  a backend the command needs is missing here (TensorRT, a GPU, the PNG renderer)
  4  ran, but accuracy not judged: synthetic data (int8 --calib synthetic)
  130  interrupted (Ctrl-C); outputs already in place are left as they were
A closed stdout (e.g. piped into head) drops the rest of the output and keeps the exit code."""


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

    def main(self, *args: Any, **kwargs: Any) -> Any:
        _tolerate_closed_stdout()
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except XBuildError as exc:
            click.echo(error_report(exc), err=True)
            ctx.exit(exc.exit_code)
        except click.UsageError as exc:  # click's own: no such option, missing argument, bad choice
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"error: {exc.format_message()}\n  hint: see '{where} --help'", err=True)
            ctx.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            # Not click's "Aborted!" with exit 1, which would read as "verification failed".
            click.echo("interrupted", err=True)
            ctx.exit(130)


class _PipeSafeStdout(io.RawIOBase):
    """File descriptor 1 as a raw stream that drops what it cannot write once the reader is gone.

    Python's own stdout raises ``BrokenPipeError`` mid-command (click then exits 1, which reads as
    "verification failed") or at interpreter exit; here the command runs to its end and exits with
    its own verdict."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.reader_gone = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return os.isatty(self.fd)

    def write(self, data: Any) -> int:
        size = len(memoryview(data).cast("B"))
        if self.reader_gone:
            return size
        try:
            return os.write(self.fd, data)
        except BrokenPipeError:
            self.reader_gone = True
            return size


def _tolerate_closed_stdout() -> None:
    """Put :class:`_PipeSafeStdout` under ``sys.stdout`` when it is the process's own (not a test's)."""
    stream = sys.stdout
    if not isinstance(stream, io.TextIOWrapper) or stream is not sys.__stdout__:  # guarded, or a test's
        return
    try:
        fd = stream.fileno()
        stream.flush()
    except (OSError, ValueError, io.UnsupportedOperation):
        return
    safe = io.TextIOWrapper(io.BufferedWriter(_PipeSafeStdout(fd)), encoding=stream.encoding,
                            errors=stream.errors, line_buffering=stream.line_buffering)
    sys.stdout = safe


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
      xbuild compile xception65 --set middle.repeat=4 --set head.num_classes=10
      xbuild validate specs/*.yaml
      xbuild list
      xbuild diff xception41 xception65
      xbuild draw specs/xception.yaml -o xception.svg
      xbuild export specs/xception.yaml --out build/
      xbuild verify build/
    """


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="PATH=VALUE",
    help="Override a spec value, e.g. --set middle.repeat=4 or --set entry.blocks[0].stride=1 (repeatable).")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the result as JSON on stdout instead of the table.")


def _write_outputs(out_dir: Path, files: dict[str, bytes | Callable[[Path], None]]) -> None:
    """Write into a temporary folder inside ``out_dir``, then move each file in by rename, so an
    interrupted run never leaves a half-written file in ``out_dir`` (``xception_build.files``)."""
    with staged_output(out_dir) as stage:
        for name, content in files.items():
            target = stage.path / name
            if callable(content):
                content(target)
            else:
                target.write_bytes(content)
        stage.install(files)


@main.command("compile", short_help="Validate and build a spec; print its per-block table.", epilog=f"""\b
Examples:
  xbuild compile specs/xception.yaml
  xbuild compile xception65
  xbuild compile specs/xception41.yaml --set head.num_classes=10 --json
  xbuild compile specs/xception.yaml --weights timm_legacy_xception.pth --out build/xception

{EXIT_CODES_HELP}""")
@click.argument("spec", type=click.Path(path_type=Path))
@set_option
@json_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="Write spec.resolved.yaml, summary.json and weights.safetensors here.")
@click.option("--weights", type=click.Path(path_type=Path),
              help="Import weights first (.safetensors or torch state dict; ours or a timm checkpoint).")
@click.option("--seed", default=0, show_default=True, help="Seed of the weight initialisation.")
def compile_command(spec: Path, overrides: Sequence[str], as_json: bool, out_dir: Path | None,
                    weights: Path | None, seed: int) -> None:
    """Validate SPEC, build the network and print a per-block summary.

    SPEC is a spec file, or the name of a shipped spec (xbuild list); a file that exists wins.

    The table lists every block with its flow, module name, the spec entry (and the file and
    line) it came from, output shape, parameters and multiply-accumulates, then the totals.
    Without --out and --weights nothing is built: the table comes from the plan, without torch.
    """
    from .plan import plan_spec
    from .spec import dump_resolved_yaml, load_spec, spec_hash
    from .summary import format_table, summary_data

    if out_dir is not None:
        check_output_folder(out_dir)
    loaded = load_spec(spec, overrides)
    if out_dir is None and weights is None:
        model = None
        plan = plan_spec(loaded)
    else:
        from .builder import build_model
        from .weights import load_weights

        model = build_model(loaded, seed=seed)
        plan = model.plan
        if weights is not None:
            layout = load_weights(model, weights)
            click.echo(f"imported {weights} ({layout} layout)", err=True)
    data = summary_data(plan, loaded.source.files[0] if loaded.source else str(spec), loaded.source)
    data["spec_hash"] = spec_hash(loaded)
    if out_dir is not None:
        from .weights import save_weights

        assert model is not None  # built above whenever --out is given
        trained = model
        _write_outputs(out_dir, {
            "spec.resolved.yaml": dump_resolved_yaml(loaded).encode(),
            "summary.json": (json.dumps(data, indent=2) + "\n").encode(),
            "weights.safetensors": lambda target: save_weights(trained, target, {"spec_hash": data["spec_hash"]}),
        })
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(format_table(data))
    if out_dir is not None:
        click.echo(f"wrote {out_dir}/spec.resolved.yaml, summary.json, weights.safetensors", err=True)


@main.command("validate", short_help="Check specs without building them (editors, CI).", epilog=f"""\b
Examples:
  xbuild validate specs/*.yaml
  xbuild validate my_variant.yaml --set middle.repeat=4

{EXIT_CODES_HELP}""")
@click.argument("specs", nargs=-1, required=True, type=click.Path(path_type=Path))
@set_option
def validate_command(specs: Sequence[Path], overrides: Sequence[str]) -> None:
    """Check specs without building them (for editors, CI and pre-commit).

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
            click.echo(error_report(exc), err=True)
            continue
        click.echo(f"ok: {path} ({plan.name}: {plan.total_params:,} parameters, "
                   f"{plan.total_macs / 1e9:.2f} GMACs)")
    if failures:
        raise UserError(f"{failures} of {len(specs)} spec{'s' if len(specs) > 1 else ''} invalid")


@main.command("list", short_help="List the shipped specs with parameters and MACs.", epilog=f"""\b
Examples:
  xbuild list
  xbuild list 'xception6*'
  xbuild list --json

{EXIT_CODES_HELP}""")
@click.argument("pattern", required=False)
@json_option
def list_command(pattern: str | None, as_json: bool) -> None:
    """List the specs shipped with xception-build: name, input size, classes, parameters, GMACs.

    Any of them compiles by name (xbuild compile xception65) and can be extended by name
    (extends: xception41). PATTERN filters the names with shell wildcards.
    """
    from .listing import format_listing, list_shipped, listing_data

    rows = list_shipped(pattern)
    click.echo(json.dumps(listing_data(rows), indent=2) if as_json else format_listing(rows))


@main.command("schema", short_help="Print the JSON Schema of the spec language (for editors).", epilog=f"""\b
Examples:
  xbuild schema > spec.schema.json
  # then, as the first line of a spec:
  # yaml-language-server: $schema=spec.schema.json

{EXIT_CODES_HELP}""")
def schema_command() -> None:
    """Print the JSON Schema (draft 2020-12) of spec files, generated from the spec models.

    Editors that read JSON Schema (VS Code, JetBrains, Neovim through yaml-language-server)
    then check keys, types and choices and complete them while a spec is typed. The shipped
    specs point at the copy shipped beside them. The schema checks structure only; shapes,
    layouts and everything else are checked by xbuild validate.
    """
    from .schema import spec_json_schema

    click.echo(json.dumps(spec_json_schema(), indent=2))


@main.command("diff", short_help="Show what changed between two specs, block by block, and its cost.",
              epilog=f"""\b
Examples:
  xbuild diff xception41 xception65
  xbuild diff xception xception_ablation_no_residual --json
  xbuild diff xception41 xception41 --set defaults.layout=[act,dw,pw,norm]

{EXIT_CODES_HELP}""")
@click.argument("spec_a", metavar="A", type=click.Path(path_type=Path))
@click.argument("spec_b", metavar="B", type=click.Path(path_type=Path))
@set_option
@json_option
def diff_command(spec_a: Path, spec_b: Path, overrides: Sequence[str], as_json: bool) -> None:
    """Compare spec B with spec A after extends, --set and the defaults cascade.

    Lists the settings that differ, then each block added, removed or changed (with the fields
    that changed, where each side wrote it, and its parameters and MACs), then the parameters and
    MACs of each flow, the head and the total, with the change. --set applies to B, so
    comparing a spec with itself shows what the overrides do. A and B are files or names of
    shipped specs.
    """
    from .diff import diff_specs, format_diff
    from .spec import load_spec

    diff = diff_specs(load_spec(spec_a), load_spec(spec_b, overrides))
    click.echo(json.dumps(diff.as_data(), indent=2) if as_json else format_diff(diff))


@main.command("draw", short_help="Draw the network as the Xception paper does: SVG, PNG or HTML.", epilog=f"""\b
Examples:
  xbuild draw specs/xception.yaml -o xception.svg
  xbuild draw xception65 -o xception65.png
  xbuild draw specs/xception41.yaml --set middle.repeat=4 -o variant.html

{EXIT_CODES_HELP}""")
@click.argument("spec", type=click.Path(path_type=Path))
@set_option
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path), metavar="FILE",
              help="The file to write; its extension picks the format: .svg, .png or .html.")
def draw_command(spec: Path, overrides: Sequence[str], output: Path) -> None:
    """Draw SPEC's network, laid out from its plan as the Xception paper draws it.

    Entry, middle and exit flow side by side; each block with its layers, stride, shortcut,
    parameters and MACs, the spec entry and the file and line it is written at, and the
    feature-map size on the arrows between blocks. A flow or an entry that repeats is drawn once,
    marked with its count (x 8). The HTML page shows each block's modules when hovered; the PNG
    needs the resvg-py package (pip install 'xception-build[draw]'). An existing FILE is replaced
    only once the drawing is complete. Needs the plan only (no torch).
    """
    from .draw import check_drawing_target, write_drawing
    from .plan import plan_spec
    from .spec import load_spec

    check_drawing_target(output)
    loaded = load_spec(spec, overrides)
    plan = plan_spec(loaded)
    write_drawing(plan, output, loaded.source, loaded.source.files[0] if loaded.source else str(spec), overrides)
    click.echo(f"wrote {output}", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
