"""Plain-text formatting of the client's answers: tables, durations, ages, numbers."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from sagan_cli.client import Api, ClientError, parse_time, resolve_credentials

SHORT = 8  # characters of an id in tables; any unique prefix is accepted back


def short(value: str | None) -> str:
    return value[:SHORT] if value else "-"


def duration(seconds: float | None) -> str:
    """42s, 3m12s, 2h05m, 3d04h."""
    if seconds is None:
        return "-"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def age(value: str | None, now: datetime | None = None) -> str:
    t = parse_time(value)
    if t is None:
        return "-"
    return duration(((now or datetime.now(UTC)) - t).total_seconds())


def local_time(value: str | None, with_date: bool = False) -> str:
    t = parse_time(value)
    if t is None:
        return "-"
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.0f}%"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], right: frozenset[int] = frozenset()
) -> str:
    """Columns padded to their widest cell, two spaces apart; `right` columns right-aligned."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2)


def key_values(pairs: Sequence[tuple[str, Any]]) -> str:
    """`label   value` lines; a value with newlines continues under the first."""
    width = max(len(k) for k, _ in pairs) + 2
    lines = []
    for key, value in pairs:
        text = "-" if value is None or value == "" else str(value)
        first, *rest = text.split("\n")
        lines.append(f"{key.ljust(width)}{first}")
        lines.extend(" " * width + line for line in rest)
    return "\n".join(lines)


def wrap_items(items: Sequence[str], width: int = 88) -> str:
    """`a=1  b=2 ...` wrapped into lines of about `width` characters."""
    lines, line = [], ""
    for item in items:
        if line and len(line) + 2 + len(item) > width:
            lines.append(line)
            line = item
        else:
            line = f"{line}  {item}" if line else item
    if line:
        lines.append(line)
    return "\n".join(lines)


def elapsed(job: dict) -> str:
    start = parse_time(job.get("started_at"))
    if start is None:
        return "-"
    end = parse_time(job.get("finished_at")) or datetime.now(UTC)
    return duration((end - start).total_seconds())


def when(value: str | None) -> str:
    return "-" if not value else f"{local_time(value, with_date=True)} ({age(value)} ago)"


# -- what every client command shares ----------------------------------------------------------

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON, for scripts.")]
Interval = Annotated[
    float, typer.Option(help="Seconds between polls of the service.", min=0.1, hidden=True)
]


JobIdArg = Annotated[str, typer.Argument(help="A job id, or a unique prefix of one.")]


def echo(text: str = "", err: bool = False) -> None:
    typer.echo(text, err=err)


def handled(fn: Callable) -> Callable:
    """Expected failures as `error: ...` on stderr and exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            echo(f"error: {e.message}", err=True)
            if e.hint:
                echo(f"  {e.hint}", err=True)
            raise typer.Exit(e.code) from None
        except KeyboardInterrupt:
            echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:  # `sagan jobs list | head`: the reader has gone; so do we
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None

    return wrapper


def connect(timeout: float = 30.0) -> Api:
    return Api(resolve_credentials(), timeout=timeout)


def protocol_line(p: dict) -> str:
    """One line of a score protocol (sagan_core.evaluate.protocol)."""
    ref = p.get("reference") or {}
    data = ref.get("dataset") or ref.get("key")
    if ref.get("content_hash"):
        data = f"{data} {ref.get('dataset_id')} (sha256 {ref['content_hash'][:12]})"
    trunc = f", truncation {p['truncation']}" if p.get("truncation") is not None else ""
    line = (
        f"{p.get('generated', 0):,} generated ({p.get('generator')}, seed {p.get('seed')}{trunc}) "
        f"vs {ref.get('count', 0):,} {ref.get('split', '')} images of {data}; "
        f"{p.get('feature_extractor')} {p.get('weights_sha256')}; {p.get('resolution')} px"
    )
    if p.get("intra_fid"):
        line += f"; intra-FID over classes {', '.join(map(str, p['intra_fid']['classes']))}"
    return line
