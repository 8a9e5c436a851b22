"""The one way a benchmark is told its sizes: `RESOLUTIONxBATCH[xCLASSES]`, comma separated."""

from __future__ import annotations


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    """`32x64,128x256x1000` -> [(32, 64, 10), (128, 256, 1000)] (resolution x batch [x classes];
    classes default to 1,000 at 128 px and above, else 10)."""
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        parts = [int(v) for v in item.lower().split("x")]
        if len(parts) not in (2, 3):
            raise ValueError(f"size {item!r} is not RESOLUTIONxBATCH[xCLASSES]")
        if len(parts) == 2:
            parts.append(1000 if parts[0] >= 128 else 10)
        out.append((parts[0], parts[1], parts[2]))
    return out
