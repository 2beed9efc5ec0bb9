"""Stage `push`: upload a checkpoint folder to the Hugging Face hub (create the repo, upload the folder).

The model card is written first when the folder has none; cram's own unedited card is rewritten so its
How-to-use names the hub repo instead of the local folder; a hand-edited card is uploaded as it is.
Every problem (no token, offline, unreachable hub, rejected token, bad repo id) is one line, exit 2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from cramcli.stages import options
from cramcli.utils.console import Output
from cramcli.utils.errors import UsageError

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
IGNORE = [".*", "**/.*"]
"""Hidden files (atomic-write leftovers, editor files) never leave the machine."""


def run(
    output: Output,
    checkpoint: Annotated[Optional[Path], typer.Argument(help="Checkpoint folder (or run folder) to upload; default: the newest finished run under outputs/runs.")] = None,
    *,
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub model repo OWNER/NAME (created if missing).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    revision: Annotated[Optional[str], typer.Option("--revision", help="Branch to upload to (created if missing; default main).")] = None,
    budget: options.RunBudget = None,
) -> None:
    """Upload a checkpoint to the Hugging Face hub with its model card (written first if missing).

    Needs a token: HF_TOKEN or `hf auth login`.
    """
    from cramcli.model.runs import pick_run
    from cramcli.publish.hub import LOGIN, hub_errors
    from cramcli.publish.recorded import cram_checkpoint

    _check_repo_id(repo_id)
    if revision is not None and not revision.strip():
        raise UsageError("--revision: empty; pass a branch name, e.g. --revision main")
    folder, _ = cram_checkpoint(pick_run(checkpoint, budget=budget, flag="CHECKPOINT", say=output.info))
    import huggingface_hub
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise UsageError("HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it (and HF_HUB_OFFLINE=0) to push")
    token = huggingface_hub.get_token()
    if not token:
        raise UsageError(f"no Hugging Face token found; {LOGIN}")

    card_note = _ensure_card(output, folder, repo_id)
    api = HfApi(endpoint=constants.ENDPOINT, token=token)
    with hub_errors(repo_id, constants.ENDPOINT):
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        output.info(f"uploading {folder} to {url} …")
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision,
                                   ignore_patterns=IGNORE, commit_message=f"cram push of {folder.name}")
    report = {"repo_id": repo_id, "url": str(url), "revision": revision or "main", "private": private,
              "folder": str(folder), "commit": getattr(commit, "commit_url", str(commit)), "card": card_note}
    output.report(report, _table(report))


def _check_repo_id(repo_id: str) -> None:
    if not _REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id or repo_id.endswith((".git", ".")):
        raise UsageError(f"--repo-id {repo_id!r}: not a hub repo id; use OWNER/NAME (letters, digits, '-', '_', '.'; "
                         "no '--' or '..'), e.g. --repo-id alice/crammed-bert")


def _ensure_card(output: Output, folder: Path, repo_id: str) -> str:
    """Write the card when missing; point cram's own card at the repo; leave an edited card alone."""
    from cramcli.publish import write as card

    readme = folder / card.README
    if not readme.exists():
        card.write_card(folder, repo_id=repo_id)
        return "written"
    inputs = card.card_inputs(folder)
    if inputs is None:
        output.info(f"{readme}: edited by hand; uploading it as it is")
        return "kept (edited by hand)"
    if inputs.get("repo_id") == repo_id:
        return "kept (cram's, for this repo)"
    glue = inputs.get("glue")
    card.write_card(folder, glue=Path(glue) if glue and Path(glue).is_file() else None, name=inputs.get("name"),
                    license=inputs.get("license") or card.DEFAULT_LICENSE, note=inputs.get("note"), repo_id=repo_id)
    return "rewritten for this repo"


def _table(report: dict[str, Any]) -> Table:
    table = Table(title="cram push", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key in ("url", "revision", "private", "folder", "card", "commit"):
        table.add_row(key, str(report[key]))
    return table

