"""`sagan models ...`: a running service's trained generators: list, show, samples, attention maps
and checkpoint downloads."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sagan_cli import output as fmt
from sagan_cli.client import (
    Api,
    ClientError,
)
from sagan_cli.output import JsonFlag, connect, echo, handled

models_app = typer.Typer(
    help="Trained generators on a running service: list, show, samples, download.",
    no_args_is_help=True,
)


@models_app.command("list")
@handled
def models_list(
    job: Annotated[
        str | None, typer.Option(help="Only this job's (an id or a unique prefix).")
    ] = None,
    tag: Annotated[str | None, typer.Option(help="latest or best.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.", min=1)] = 30,
    json_: JsonFlag = False,
) -> None:
    """Your models (each job's latest and best generator), most recently updated first."""
    with connect() as api:
        job_id = api.resolve_id("job", job) if job else None
        items = []
        for m in api.pages("/models", job_id=job_id, tag=tag):
            items.append(m)
            if len(items) >= limit:
                break
    if json_:
        echo(fmt.as_json(items))
        return
    if not items:
        echo("(no models)")
        return
    rows = [
        [
            fmt.short(m["id"]),
            fmt.short(m["job_id"]),
            m["tag"],
            m["step"],
            m["resolution"],
            m["num_classes"],
            fmt.age(m.get("updated_at")),
            " ".join("@" + a for a in m.get("aliases") or []),
        ]
        for m in items
    ]
    headers = ["ID", "JOB", "TAG", "STEP", "RES", "CLASSES", "UPDATED", "ALIASES"]
    echo(fmt.table(headers, rows, right=frozenset({3, 4, 5, 6})))


@models_app.command("show")
@handled
def models_show(
    model_id: Annotated[str, typer.Argument(help="A model id, a unique prefix of one, or @alias.")],
    json_: JsonFlag = False,
) -> None:
    """One model: its job, tag, step, resolution, class names and aliases."""
    with connect() as api:
        m = api.get_json(f"/models/{api.resolve_id('model', model_id)}")
    if json_:
        echo(fmt.as_json(m))
        return
    names = m.get("class_names") or []
    classes = fmt.wrap_items([f"{i}:{n}" if n != str(i) else n for i, n in enumerate(names)])
    echo(
        fmt.key_values(
            [
                ("id", m["id"]),
                ("job", m["job_id"]),
                ("tag", m["tag"]),
                ("step", m["step"]),
                ("resolution", f"{m['resolution']} px"),
                ("classes", f"{m['num_classes']}\n{classes}" if classes else m["num_classes"]),
                ("checkpoint", m.get("checkpoint_id")),
                ("aliases", " ".join("@" + a for a in m.get("aliases") or []) or None),
                ("updated", fmt.when(m.get("updated_at"))),
            ]
        )
    )


def _write(output: Path, data: bytes) -> None:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(data)
    except OSError as e:
        raise ClientError(f"cannot write {output}: {e.strerror or e}") from e


def _png(api: Api, path: str, params: dict, output: Path, what: str) -> None:
    response = api.request("GET", path, params={k: v for k, v in params.items() if v is not None})
    step = response.headers.get("x-checkpoint-step")
    at = f" at step {step}" if step else ""
    if str(output) == "-":
        sys.stdout.buffer.write(response.content)
        sys.stdout.buffer.flush()
        echo(f"{what}{at}: {len(response.content)} bytes of PNG", err=True)
        return
    _write(output, response.content)
    echo(f"wrote {output} ({what}{at})")


@models_app.command("samples")
@handled
def models_samples(
    model_id: Annotated[str, typer.Argument(help="A model id, a unique prefix of one, or @alias.")],
    cls: Annotated[
        str, typer.Option("--class", "-c", help="A class index (0-based) or class name.")
    ],
    n: Annotated[int, typer.Option("--n", "-n", help="Images in the grid.")] = 16,
    seed: Annotated[int, typer.Option(help="Same seed, same images.")] = 0,
    truncation: Annotated[
        float | None,
        typer.Option(help="Keep |z| <= T (1.0: more typical, less variety); default: none."),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The PNG to write; - for stdout.")
    ] = Path("samples.png"),
) -> None:
    """A PNG grid of one class from a model: `sagan models samples ID --class 3 -o threes.png`."""
    with connect(timeout=300) as api:
        mid = api.resolve_id("model", model_id)
        params = {"class": cls, "n": n, "seed": seed, "truncation": truncation}
        what = f"{n} images of class {cls}, seed {seed}, model {fmt.short(mid)}"
        _png(api, f"/models/{mid}/samples", params, output, what)


@models_app.command("attention")
@handled
def models_attention(
    model_id: Annotated[str, typer.Argument(help="A model id, a unique prefix of one, or @alias.")],
    cls: Annotated[
        str, typer.Option("--class", "-c", help="A class index (0-based) or class name.")
    ],
    x: Annotated[int, typer.Option(help="Pixel column, 0-based.")],
    y: Annotated[int, typer.Option(help="Pixel row, 0-based.")],
    seed: Annotated[int, typer.Option(help="The image: the first of `samples` at this seed.")] = 0,
    truncation: Annotated[float | None, typer.Option(help="As for samples.")] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The PNG to write; - for stdout.")
    ] = Path("attention.png"),
) -> None:
    """Where the generator's self-attention looks from pixel (x, y), beside the image."""
    with connect(timeout=300) as api:
        mid = api.resolve_id("model", model_id)
        params = {"class": cls, "x": x, "y": y, "seed": seed, "truncation": truncation}
        what = f"class {cls}, seed {seed}, pixel ({x}, {y}), model {fmt.short(mid)}"
        _png(api, f"/models/{mid}/attention", params, output, what)


def _filename(disposition: str | None) -> str | None:
    m = re.search(r'filename="?([^";]+)"?', disposition or "")
    return Path(m.group(1)).name if m else None


@models_app.command("download")
@handled
def models_download(
    model_id: Annotated[str, typer.Argument(help="A model id, a unique prefix of one, or @alias.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write (default: the service's file name)."),
    ] = None,
) -> None:
    """Download a model's checkpoint (loadable with `sagan sample --checkpoint FILE`)."""
    import httpx

    with connect(timeout=300) as api:
        mid = api.resolve_id("model", model_id)
        with api.stream(f"/models/{mid}/checkpoint", redirect="false") as response:
            if response.headers.get("content-type", "").startswith("application/json"):
                response.read()
                url = response.json()["url"]  # S3: a presigned URL, fetched without our token
                try:
                    with httpx.stream("GET", url, timeout=300, follow_redirects=True) as r:
                        if r.status_code >= 400:
                            r.read()
                            raise ClientError(f"storage answered {r.status_code}: {r.text[:200]}")
                        target = output or Path(f"sagan-{mid}.pt")
                        size = _save_stream(r, target)
                except httpx.HTTPError as e:
                    raise ClientError(f"downloading the checkpoint from storage: {e}") from e
            else:
                name = _filename(response.headers.get("content-disposition"))
                target = output or Path(name or f"sagan-{mid}.pt")
                size = _save_stream(response, target)
    echo(f"wrote {target} ({size / 1e6:.1f} MB)")


def _save_stream(response: Any, target: Path) -> int:
    """Chunks to `target.part`, renamed once complete: no half file under the real name."""
    part = target.with_name(target.name + ".part")
    size = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with part.open("wb") as f:
            for chunk in response.iter_bytes():
                f.write(chunk)
                size += len(chunk)
        os.replace(part, target)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise ClientError(f"cannot write {target}: {e.strerror or e}") from e
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return size


@models_app.command("alias")
@handled
def models_alias(
    model_id: Annotated[str, typer.Argument(help="A model id, a unique prefix, or @alias.")],
    alias: Annotated[str, typer.Argument(help="Your name for it, e.g. best-digits.")],
) -> None:
    """Point an alias at a model (made, or moved): `@alias` then names it everywhere."""
    with connect() as api:
        mid = api.resolve_id("model", model_id)
        a = api.request("PUT", f"/models/{mid}/aliases/{alias.lstrip('@')}").json()
    echo(f"@{a['alias']} -> model {a['model_id']}")


@models_app.command("unalias")
@handled
def models_unalias(alias: Annotated[str, typer.Argument(help="The alias to remove.")]) -> None:
    """Remove an alias (the model stays)."""
    with connect() as api:
        api.request("DELETE", f"/aliases/{alias.lstrip('@')}")
    echo(f"@{alias.lstrip('@')} removed")


@models_app.command("aliases")
@handled
def models_aliases(json_: JsonFlag = False) -> None:
    """Your aliases and the models they name."""
    with connect() as api:
        items = api.get_json("/aliases")["items"]
    if json_:
        echo(fmt.as_json(items))
        return
    rows = [["@" + a["alias"], a["model_id"], fmt.age(a.get("updated_at"))] for a in items]
    echo(fmt.table(["ALIAS", "MODEL", "UPDATED"], rows) if rows else "(no aliases)")
