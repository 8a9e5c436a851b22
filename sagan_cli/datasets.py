"""`sagan datasets upload|list|show|delete`: stored datasets on a running service.

`upload` of a folder streams a tar of it made on the fly (one image in memory at a time, nothing
written to disk); a file (zip, tar, tar.gz, or a packed file from `sagan pack`) is streamed as it
is. The service packs it on a worker; `--wait` follows that until the dataset is ready.
Like the rest of the client, only httpx: nothing of the service packages.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from sagan_cli import output as fmt
from sagan_cli.client import ClientError
from sagan_cli.output import JsonFlag, connect, echo, handled

datasets_app = typer.Typer(
    help="Stored datasets on a running service: upload, list, show, delete.",
    no_args_is_help=True,
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
CHUNK = 1 << 20


class _Sink(io.RawIOBase):
    """What tarfile writes, kept until the generator hands it on."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def folder_files(folder: Path) -> list[Path]:
    """The images under the class folders, sorted; hidden files and folders left out."""
    files = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and len(rel.parts) >= 2:
            files.append(p)
    return files


def tar_stream(folder: Path, files: list[Path]) -> Iterator[bytes]:
    """An uncompressed tar of `files` (their paths relative to `folder`), as chunks."""
    sink = _Sink()
    with tarfile.open(fileobj=sink, mode="w|") as tar:
        for path in files:
            info = tar.gettarinfo(str(path), arcname=path.relative_to(folder).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as f:
                tar.addfile(info, f)
            if data := sink.drain():
                yield data
    if data := sink.drain():
        yield data


def file_stream(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _classes(ds: dict) -> str:
    shown = [f"{c['name']} ({c['count']})" for c in ds.get("classes", [])]
    return fmt.wrap_items(shown) if shown else "-"


def _show(ds: dict) -> None:
    echo(
        fmt.key_values(
            [
                ("id", ds["id"]),
                ("name", ds["name"]),
                ("state", ds["state"] + (f": {ds['reason']}" if ds.get("reason") else "")),
                ("images", ds["image_count"]),
                ("classes", _classes(ds)),
                ("resolutions", ", ".join(map(str, ds["resolutions"])) or "-"),
                ("source", f"{ds.get('source_format') or '-'}, {_size(ds['size_bytes'])}"),
                ("content hash", ds.get("content_hash")),
                ("pack job", ds.get("pack_job_id")),
                ("created", fmt.local_time(ds["created_at"], with_date=True)),
            ]
        )
    )


def _wait(api: Any, dataset_id: str, interval: float) -> dict:
    shown = None
    while True:
        ds = api.get_json(f"/datasets/{dataset_id}")
        if ds["state"] in ("ready", "failed"):
            return ds
        if ds.get("progress") and ds["progress"] != shown:
            shown = ds["progress"]
            echo(f"{ds['name']}: {shown}", err=True)
        time.sleep(interval)


@datasets_app.command("upload")
@handled
def datasets_upload(
    path: Annotated[
        Path, typer.Argument(help="A folder of class folders, or a zip/tar/packed file.")
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Unique among your datasets.")],
    resolution: Annotated[
        list[int] | None,
        typer.Option("--resolution", "-r", help="Pack at this size (repeat for several)."),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow packing.")] = True,
    as_json: JsonFlag = False,
    interval: Annotated[float, typer.Option(hidden=True, min=0.1)] = 1.0,
) -> None:
    """Upload images for training on any worker: prints the dataset, then follows its packing."""
    if path.is_dir():
        files = folder_files(path)
        if not files:
            raise ClientError(
                f"{path}: no PNG/JPEG images in class folders (expected {path}/<class>/<image>)"
            )
        classes = {f.relative_to(path).parts[0] for f in files}
        echo(f"uploading {len(files)} images in {len(classes)} classes from {path}", err=True)
        body: Iterator[bytes] = tar_stream(path, files)
    elif path.is_file():
        body = file_stream(path)
    else:
        raise ClientError(f"{path}: no such file or folder")
    import httpx

    params: dict[str, Any] = {"name": name}
    if resolution:
        params["resolution"] = resolution
    with connect(timeout=30) as api:
        response = api.request(
            "POST",
            "/datasets",
            params=params,
            content=body,
            headers={"Content-Type": "application/octet-stream"},
            timeout=httpx.Timeout(30, write=None, read=600),
        )
        ds = api._json(response)
        if not as_json:
            echo(f"{ds['id']}  {ds['name']}  {ds['state']}  {_size(ds['size_bytes'])}")
        if wait:
            ds = _wait(api, ds["id"], interval)
    if as_json:
        echo(fmt.as_json(ds))
    elif wait:
        _show(ds)
    if ds["state"] == "failed":
        raise typer.Exit(1)


@datasets_app.command("list")
@handled
def datasets_list(as_json: JsonFlag = False) -> None:
    """Your datasets, newest first."""
    with connect() as api:
        items = api.get_json("/datasets")["items"]
    if as_json:
        echo(fmt.as_json(items))
        return
    rows = [
        [
            fmt.short(d["id"]),
            d["name"],
            d["state"],
            d["image_count"],
            len(d["classes"]),
            ",".join(map(str, d["resolutions"])) or "-",
            _size(d["size_bytes"]),
            fmt.age(d["created_at"]),
        ]
        for d in items
    ]
    headers = ["ID", "NAME", "STATE", "IMAGES", "CLASSES", "RES", "SIZE", "AGE"]
    echo(fmt.table(headers, rows, right=frozenset({3, 4, 6})))


@datasets_app.command("show")
@handled
def datasets_show(
    dataset: Annotated[str, typer.Argument(help="Id or name.")], as_json: JsonFlag = False
) -> None:
    """One dataset: state (or why it failed), classes with counts, resolutions, hash."""
    with connect() as api:
        ds = api.get_json(f"/datasets/{dataset}")
    echo(fmt.as_json(ds)) if as_json else _show(ds)


@datasets_app.command("delete")
@handled
def datasets_delete(dataset: Annotated[str, typer.Argument(help="Id or name.")]) -> None:
    """Delete a dataset and its stored files (refused while a job uses it)."""
    with connect() as api:
        api.request("DELETE", f"/datasets/{dataset}")
    echo(f"deleted {dataset}")


def register(app: typer.Typer) -> None:
    panel = "Client of a running service (SAGAN_URL, SAGAN_TOKEN or `sagan login`)"
    app.add_typer(datasets_app, name="datasets", rich_help_panel=panel)
