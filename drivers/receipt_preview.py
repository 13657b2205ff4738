"""A PNG picture of what a receipt printer prints, drawn from the ESC/POS it was sent.

The preview is laid out on the printer's character grid (one cell = half a Hanzi), so columns line
up as they do on paper. Text uses Noto Sans (Mono) CJK when installed, Simplified or Traditional by
the encoding, else Pillow's default font (which has no Hanzi). QR codes are drawn with the
``qrcode`` package when it is installed, otherwise as a labelled box; the payload is written under
either way. Barcodes are drawn as stand-in bars with their data; cuts and drawer kicks as marks.
"""

from __future__ import annotations

import functools
import importlib
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from drivers.escpos_decode import (
    BarcodeItem,
    CutItem,
    DecodedItem,
    DrawerKickItem,
    FeedItem,
    QrCode,
    TextLine,
    decode_escpos,
)
from drivers.printer import PAPER_80MM, char_cells, is_cjk_encoding

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Draw = Callable[[ImageDraw.ImageDraw, int], None]  # draws one item at vertical offset y

CELL = 12  # pixels per cell: a 24 px Hanzi is two cells, like Font A's 12×24 dots
LINE = 32  # pixels per text line
MARGIN = 16
FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
)


@functools.cache
def find_cjk_font() -> str | None:
    """Path of a Noto Sans CJK font file, or None."""
    for candidate in FONT_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return None
    try:
        listing = subprocess.run(
            [fc_list], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in listing.splitlines():
        if "noto sans cjk" in line.lower():
            return line.split(":", 1)[0]
    return None


@functools.cache
def _font(size: int, traditional: bool) -> Font:
    path = find_cjk_font()
    if path is not None:
        # A .ttc holds JP/KR/SC/TC/HK faces, proportional then Mono; pick the one for the script.
        wanted = ("Mono CJK TC", "CJK TC") if traditional else ("Mono CJK SC", "CJK SC")
        faces: list[ImageFont.FreeTypeFont] = []
        for index in range(12):
            try:
                faces.append(ImageFont.truetype(path, size, index=index))
            except OSError:
                break
        for name in wanted:
            for face in faces:
                if name in (face.getname()[0] or ""):
                    return face
        if faces:
            return faces[0]
    return ImageFont.load_default(size=size)


def _qr_matrix(data: str) -> list[list[bool]] | None:
    """The QR modules (with quiet zone) when the optional ``qrcode`` package is there."""
    try:
        qrcode = importlib.import_module("qrcode")
    except ImportError:
        return None
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2)
    code.add_data(data.encode())
    code.make(fit=True)
    return [[bool(module) for module in row] for row in code.get_matrix()]


def render_png(
    source: bytes | Sequence[DecodedItem],
    encoding: str,
    path: str | Path,
    *,
    columns: int = PAPER_80MM,
) -> Path:
    """Draw the receipt ``source`` (ESC/POS bytes or decoded items) into a PNG at ``path``."""
    items = decode_escpos(source, encoding) if isinstance(source, bytes) else list(source)
    cjk = is_cjk_encoding(encoding)
    traditional = encoding.lower().startswith("big5")
    paper = columns * CELL
    parts: list[tuple[int, Draw]] = []
    for item in items:
        parts.extend(_layout(item, paper, cjk, traditional))
    height = MARGIN * 2 + sum(h for h, _ in parts)
    image = Image.new("RGB", (paper + MARGIN * 2, max(height, MARGIN * 2 + LINE)), "white")
    draw = ImageDraw.Draw(image)
    y = MARGIN
    for h, part in parts:
        part(draw, y)
        y += h
    target = Path(path)
    image.save(target, format="PNG")
    return target


def _layout(item: DecodedItem, paper: int, cjk: bool, trad: bool) -> list[tuple[int, Draw]]:
    match item:
        case TextLine():
            return [_text_line(item, paper, cjk, trad)]
        case QrCode(data, size):
            return _qr(data, size, paper, cjk, trad)
        case BarcodeItem(symbology, data):
            return _barcode(symbology, data, paper, cjk, trad)
        case FeedItem(lines):
            return [(lines * LINE, lambda draw, y: None)]
        case CutItem(partial):
            label = "partial cut" if partial else "cut"
            return [(LINE, lambda draw, y: _mark(draw, y, paper, label))]
        case DrawerKickItem():
            return [(LINE, lambda draw, y: _mark(draw, y, paper, "cash drawer"))]
    return []  # status queries and unknown commands print nothing


def _text_line(item: TextLine, paper: int, cjk: bool, trad: bool) -> tuple[int, Draw]:
    font = _font(24 * item.height, trad)
    cell = CELL * item.width
    used = sum(char_cells(ch, cjk) for ch in item.text) * cell
    x0 = MARGIN + {"left": 0, "center": (paper - used) // 2, "right": paper - used}[item.align]

    def draw(draw: ImageDraw.ImageDraw, y: int) -> None:
        x = max(MARGIN, x0)
        for ch in item.text:
            stroke = 1 if item.bold else 0
            draw.text((x, y), ch, font=font, fill="black", stroke_width=stroke, stroke_fill="black")
            x += char_cells(ch, cjk) * cell

    return LINE * item.height, draw


def _caption(text: str, paper: int, cjk: bool, trad: bool) -> tuple[int, Draw]:
    return _text_line(TextLine(text, "center"), paper, cjk, trad)


def _qr(data: str, size: int, paper: int, cjk: bool, trad: bool) -> list[tuple[int, Draw]]:
    matrix = _qr_matrix(data)
    side = min(paper, max(120, len(matrix) * size) if matrix else 160)
    left = MARGIN + (paper - side) // 2

    def draw(draw: ImageDraw.ImageDraw, y: int) -> None:
        if matrix is None:
            draw.rectangle((left, y, left + side, y + side), outline="black", width=3)
            draw.text((left + 12, y + 8), "QR", font=_font(24, trad), fill="black")
            return
        module = side / len(matrix)
        for r, row in enumerate(matrix):
            for c, dark in enumerate(row):
                if dark:
                    x0, y0 = left + c * module, y + r * module
                    draw.rectangle((x0, y0, x0 + module, y0 + module), fill="black")

    return [(side + 8, draw), _caption(f"QR: {data}", paper, cjk, trad)]


def _barcode(
    symbology: str, data: str, paper: int, cjk: bool, trad: bool
) -> list[tuple[int, Draw]]:
    width = min(paper, 12 * (len(data) + 4))
    left = MARGIN + (paper - width) // 2

    def draw(draw: ImageDraw.ImageDraw, y: int) -> None:
        x = left
        for i, byte in enumerate(data.encode() * 3):  # stand-in bars, stable for one payload
            bar = 1 + (byte + i) % 3
            if i % 2 == 0:
                draw.rectangle((x, y, x + bar, y + 56), fill="black")
            x += bar + 1
            if x >= left + width:
                break

    return [(64, draw), _caption(f"{symbology} {data}", paper, cjk, trad)]


def _mark(draw: ImageDraw.ImageDraw, y: int, paper: int, label: str) -> None:
    middle = y + LINE // 2
    for x in range(MARGIN, MARGIN + paper, 12):
        draw.line((x, middle, x + 6, middle), fill="gray", width=2)
    font = _font(16, False)
    draw.text((MARGIN + paper - 8 * len(label) - 8, middle - 20), label, font=font, fill="gray")
