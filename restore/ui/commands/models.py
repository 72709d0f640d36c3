"""`mp3restore models [list|fetch NAME|verify [NAME]]`: the model manager at the edge."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from restore.ui.console import safe
from restore.errors import RestoreError
from restore.models.store import CATALOGUE, candidates, fetch, find_model, models_dir, verify
from restore.status_codes import EXIT_OK, EXIT_SETUP, EXIT_SONGS_FAILED, EXIT_USAGE


def models_command(console: Console, action: str, name: str | None, folder_arg: str | None) -> int:
    folder = models_dir(folder_arg)
    if name is not None and name not in CATALOGUE:
        console.print(f"[bold red]error:[/] unknown model {safe(name)!s} (known: {', '.join(CATALOGUE)})", soft_wrap=True)
        return EXIT_USAGE
    specs = [CATALOGUE[name]] if name else list(CATALOGUE.values())
    if action == "list":
        table = Table(title=f"Models (folder: {safe(folder)})", title_justify="left")
        for column in ("name", "present", "size", "where", "for", "variants"):
            table.add_column(column, overflow="fold")
        for spec in specs:
            path = find_model(spec, folder)
            size = path.stat().st_size if path else spec.approx_bytes
            table.add_row(spec.name, "[green]yes[/]" if path else "[yellow]no[/]", f"{'' if path else '~'}{size / 1e6:.1f} MB",
                          safe(path or f"put {spec.filename} in {folder}"), safe(spec.purpose), ", ".join(spec.variants))
        console.print(table)
        return EXIT_OK
    if action == "fetch":
        if name is None:
            console.print("[bold red]error:[/] say which model to fetch: " + ", ".join(CATALOGUE), soft_wrap=True)
            return EXIT_USAGE
        spec = specs[0]
        try:
            with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), console=console) as bar:
                task = bar.add_task(f"downloading {spec.filename}", total=spec.approx_bytes)
                path = fetch(spec, folder, lambda done, total: bar.update(task, completed=done, total=total or spec.approx_bytes))
        except RestoreError as exc:
            console.print(f"[bold red]error:[/] {safe(exc.one_line())}", soft_wrap=True)
            return EXIT_SETUP
        console.print(f"[green]fetched and verified[/] {safe(path)}")
        return EXIT_OK
    bad = 0
    for spec in specs:
        path = find_model(spec, folder)
        if path is None:
            console.print(f"[yellow]missing[/] {spec.name}: looked in {', '.join(safe(p.parent) for p in candidates(spec, folder))}",
                          soft_wrap=True)
            continue
        problem = verify(spec, path)
        if problem:
            bad += 1
            console.print(f"[bold red]bad[/] {spec.name} at {safe(path)}: {safe(problem)}", soft_wrap=True)
        else:
            console.print(f"[green]ok[/] {spec.name} at {safe(path)}", soft_wrap=True)
    return EXIT_SONGS_FAILED if bad else EXIT_OK
