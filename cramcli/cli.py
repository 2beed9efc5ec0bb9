"""The `cram` command line: parse flags, then call one stage module. No work happens here.

Every stage follows the same conventions: `--out` for what it writes, `--force` to replace a finished result,
`report.json` beside the artefacts, `--json` for the final report on stdout (people's output then goes to
stderr), `--device`/`--gpu`, `--seed`, `--quiet`/`--verbose`; exit 0 on success, 2 on bad input, 1 on failure.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console

from cramcli.utils import disk
from cramcli.utils.console import Output
from cramcli.utils.errors import CramError, UsageError

app = typer.Typer(
    name="cram",
    help="Pretrain a crammed BERT from scratch on a fixed compute budget and measure it on GLUE.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
budgets_app = typer.Typer(help="List, show, validate budgets and write their JSON Schema.", no_args_is_help=True)
app.add_typer(budgets_app, name="budgets")

_err = Console(stderr=True)


# Options shared by the stages (typer reads the metadata from these aliases).
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the final report as JSON on stdout (people's output goes to stderr).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and the final report.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="More detail, e.g. where each setting came from.")]


_OUTPUT_PARAMS = [
    inspect.Parameter("json_mode", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonOpt),
    inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=QuietOpt),
    inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=VerboseOpt),
]


def stage_command(module: str, function: str = "run") -> Callable[..., None]:
    """The command of stage `module`: its `run(output, ...)` signature is the command line (options are
    declared there, once), plus --json/--quiet/--verbose, which become the `Output`."""
    run = getattr(importlib.import_module(f"cramcli.stages.{module}"), function)
    signature = inspect.signature(run, eval_str=True)
    params = [p for name, p in signature.parameters.items() if name != "output"]

    def command(json_mode: bool = False, quiet: bool = False, verbose: bool = False, **kwargs: Any) -> None:
        output = Output(json_mode=json_mode, quiet=quiet, verbose=verbose)
        _guarded(lambda: run(output, **kwargs))

    command.__signature__ = signature.replace(parameters=params + _OUTPUT_PARAMS)  # type: ignore[attr-defined]
    command.__doc__ = run.__doc__
    command.__name__ = function if function != "run" else module
    return command


def _guarded(work: Callable[[], None]) -> None:
    """User errors and failed writes become one-line messages with their exit code; Ctrl-C exits 130."""
    try:
        work()
    except CramError as exc:
        _fail(exc)
    except (ValueError, RuntimeError) as exc:
        # The model layer raises plain ValueError/RuntimeError; those its caller's input caused are one line too
        # (looked up in sys.modules, so the CLI never imports torch itself).
        model_errors = sys.modules.get("cramcli.model.errors")
        if model_errors is None or not isinstance(exc, model_errors.INPUT_ERRORS):
            raise
        _fail(UsageError(str(exc)))
    except KeyboardInterrupt:
        _err.print("[red]interrupted[/]")
        raise typer.Exit(130) from None
    except Exception as exc:
        # A full disk, a file-size limit, a read-only folder: wherever cram writes, one line with the path.
        # Python raises OSError; Rust-backed writers (tokenizers, safetensors) only put "(os error N)" in the text.
        os_error = disk.as_os_error(exc)
        if os_error is None or not disk.is_write_error(os_error):
            raise
        _fail(disk.write_failure(os_error))


def _fail(exc: CramError) -> None:
    for line in exc.lines:
        _err.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


# ----------------------------------------------------------------------------------------------------------
# prepare-data / train-tokenizer


app.command("prepare-data")(stage_command("prepare_data"))
app.command("train-tokenizer")(stage_command("train_tokenizer"))
app.command("pretrain")(stage_command("pretrain"))
app.command("compare")(stage_command("compare"))


# ----------------------------------------------------------------------------------------------------------
# finetune-glue (alias glue)


app.command("finetune-glue")(stage_command("finetune_glue"))
app.command("glue", help="Alias of [bold]finetune-glue[/].")(stage_command("finetune_glue"))




# ----------------------------------------------------------------------------------------------------------
# convert-attention (alias convert)


app.command("convert-attention")(stage_command("convert_attention"))
app.command("convert", help="Alias of [bold]convert-attention[/].")(stage_command("convert_attention"))


# ----------------------------------------------------------------------------------------------------------
# card and push


app.command("card")(stage_command("card"))


app.command("push")(stage_command("push"))


# ----------------------------------------------------------------------------------------------------------
# demo and bench


app.command("demo")(stage_command("demo"))
app.command("bench")(stage_command("bench"))


# ----------------------------------------------------------------------------------------------------------
# budgets


for _verb, _function in (("list", "list_presets"), ("show", "show"), ("validate", "validate"), ("schema", "schema")):
    budgets_app.command(_verb)(stage_command("budgets", _function))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except CramError as exc:  # pragma: no cover - commands raise inside _guarded; this is a last guard
        for line in exc.lines:
            _err.print(f"[bold red]error:[/] {line}", highlight=False)
        sys.exit(exc.exit_code)
