"""Decode ESC/POS bytes back into what a printer would do with them.

Enough of ESC/POS to read back everything ``drivers.printer.render_escpos`` emits, python-escpos'
usual commands and the real-time status queries (``DLE EOT n``): tests compare what a printer
received with what was meant, and the receipt preview draws from the decoded items.

Printed text comes out as ``TextLine`` items, one per line feed, with the alignment, emphasis and
scale in force when the line began; commands that only change that state produce no item. Text bytes
are decoded with the printer's encoding (``gb18030``, ``gbk``, ``big5`` …) as a whole line, so
double-byte characters split by a mode change mid-line still decode. Anything not understood is
kept as ``Unknown`` with its bytes; decoding never fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Align = Literal["left", "center", "right"]


@dataclass(frozen=True, slots=True)
class TextLine:
    text: str
    align: Align = "left"
    bold: bool = False
    width: int = 1  # character scale (GS ! / ESC !)
    height: int = 1


@dataclass(frozen=True, slots=True)
class QrCode:
    data: str  # the stored bytes as UTF-8
    size: int = 3
    error_level: str = "L"


@dataclass(frozen=True, slots=True)
class BarcodeItem:
    symbology: str
    data: str  # without the CODE128 code-set prefix


@dataclass(frozen=True, slots=True)
class CutItem:
    partial: bool


@dataclass(frozen=True, slots=True)
class DrawerKickItem:
    pin: int
    on_ms: int
    off_ms: int


@dataclass(frozen=True, slots=True)
class FeedItem:
    lines: int


@dataclass(frozen=True, slots=True)
class StatusQuery:
    n: int  # DLE EOT n: 1 printer, 2 offline cause, 3 error cause, 4 paper sensor


@dataclass(frozen=True, slots=True)
class Unknown:
    data: bytes


DecodedItem = (
    TextLine | QrCode | BarcodeItem | CutItem | DrawerKickItem | FeedItem | StatusQuery | Unknown
)

_ALIGNS: dict[int, Align] = {0: "left", 1: "center", 2: "right", 48: "left", 49: "center",
                             50: "right"}  # fmt: skip
_BARCODES = {0: "UPC-A", 1: "UPC-E", 2: "EAN13", 3: "EAN8", 4: "CODE39", 5: "ITF", 6: "CODABAR",
             65: "UPC-A", 66: "UPC-E", 67: "EAN13", 68: "EAN8", 69: "CODE39", 70: "ITF",
             71: "CODABAR", 72: "CODE93", 73: "CODE128"}  # fmt: skip
_QR_LEVELS = {48: "L", 49: "M", 50: "Q", 51: "H"}
#: Commands that set a mode we do not track: prefix → total length.
_SKIP = {b"\x1b-": 3, b"\x1bG": 3, b"\x1bM": 3, b"\x1bJ": 3, b"\x1b3": 3, b"\x1b2": 2,
         b"\x1bt": 3, b"\x1bR": 3, b"\x1b{": 3, b"\x1bV": 3, b"\x1bc5": 4, b"\x1d\x42": 3,
         b"\x1dH": 3, b"\x1dh": 3, b"\x1dw": 3, b"\x1df": 3, b"\x1dL": 4, b"\x1dW": 4,
         b"\x1cC": 3, b"\x1c-": 3, b"\x1cW": 3, b"\x1c!": 3, b"\x1c&": 2, b"\x1c.": 2,
         b"\x10\x05": 3}  # fmt: skip


class _Decoder:
    def __init__(self, data: bytes, encoding: str) -> None:
        self.data = data
        self.encoding = encoding
        self.pos = 0
        self.items: list[DecodedItem] = []
        self.line = bytearray()
        self.line_style: tuple[Align, bool, int, int] | None = None
        self.reset()
        self.qr_size, self.qr_level = 3, "L"
        self.qr_data = b""

    def reset(self) -> None:
        self.align: Align = "left"
        self.bold = False
        self.width = self.height = 1

    def take(self, n: int) -> bytes | None:
        """The next ``n`` bytes, or None (position unchanged) when the data ends first."""
        if self.pos + n > len(self.data):
            return None
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unknown(self, n: int) -> None:
        end = min(len(self.data), self.pos + max(1, n))
        self.items.append(Unknown(self.data[self.pos : end]))
        self.pos = end

    def flush(self, force: bool = True) -> None:
        if not self.line and not force:
            return
        align, bold, width, height = self.line_style or self.style()
        text = self.line.decode(self.encoding, errors="replace")
        self.items.append(TextLine(text, align, bold, width, height))
        self.line.clear()
        self.line_style = None

    def style(self) -> tuple[Align, bool, int, int]:
        return self.align, self.bold, self.width, self.height

    def run(self) -> list[DecodedItem]:
        while self.pos < len(self.data):
            byte = self.data[self.pos]
            if byte >= 0x20:
                if self.line_style is None:
                    self.line_style = self.style()
                self.line.append(byte)
                self.pos += 1
            elif byte == 0x0A:
                self.pos += 1
                self.flush()
            elif byte == 0x0D:
                self.pos += 1
            elif byte in (0x1B, 0x1D, 0x1C, 0x10):
                self.command()
            else:
                self.unknown(1)
        self.flush(force=False)
        return self.items

    def command(self) -> None:
        head = self.data[self.pos : self.pos + 2]
        if len(head) < 2:
            self.unknown(1)
            return
        for prefix, length in _SKIP.items():
            if self.data.startswith(prefix, self.pos):
                if self.take(length) is None:
                    self.unknown(len(self.data))
                return
        handler = _HANDLERS.get(head)
        start = self.pos
        if handler is None:
            self.unknown(2)
        elif not handler(self):  # truncated: keep the rest as it is
            self.pos = start
            self.unknown(len(self.data))

    # -- one method per command; False means the data ended inside the command ---------------

    def esc_init(self) -> bool:
        self.pos += 2
        self.line.clear()  # ESC @ discards the print buffer
        self.line_style = None
        self.reset()
        return True

    def esc_align(self) -> bool:
        chunk = self.take(3)
        if chunk is None:
            return False
        self.align = _ALIGNS.get(chunk[2], "left")
        return True

    def esc_bold(self) -> bool:
        chunk = self.take(3)
        if chunk is None:
            return False
        self.bold = bool(chunk[2] & 1)
        return True

    def esc_mode(self) -> bool:  # ESC ! n
        chunk = self.take(3)
        if chunk is None:
            return False
        n = chunk[2]
        self.bold = bool(n & 0x08)
        self.height = 2 if n & 0x10 else 1
        self.width = 2 if n & 0x20 else 1
        return True

    def gs_size(self) -> bool:  # GS ! n
        chunk = self.take(3)
        if chunk is None:
            return False
        self.width, self.height = (chunk[2] >> 4) + 1, (chunk[2] & 0x0F) + 1
        return True

    def esc_feed(self) -> bool:
        chunk = self.take(3)
        if chunk is None:
            return False
        self.flush(force=False)
        self.items.append(FeedItem(chunk[2]))
        return True

    def esc_drawer(self) -> bool:
        chunk = self.take(5)
        if chunk is None:
            return False
        self.items.append(DrawerKickItem(chunk[2] & 1, chunk[3] * 2, chunk[4] * 2))
        return True

    def esc_cut(self) -> bool:  # ESC i (full) / ESC m (partial), obsolete
        self.flush(force=False)
        self.items.append(CutItem(partial=self.data[self.pos + 1] == ord("m")))
        self.pos += 2
        return True

    def gs_cut(self) -> bool:
        if self.pos + 2 >= len(self.data):
            return False
        m = self.data[self.pos + 2]
        length = 3 if m in (0, 1, 48, 49) else 4
        if self.take(length) is None:
            return False
        self.flush(force=False)
        self.items.append(CutItem(partial=m in (1, 49, 66, 98, 104)))
        return True

    def gs_barcode(self) -> bool:
        if self.pos + 2 >= len(self.data):
            return False
        m = self.data[self.pos + 2]
        if m <= 6:  # format A: data ends with NUL
            end = self.data.find(b"\x00", self.pos + 3)
            if end < 0:
                return False
            payload = self.data[self.pos + 3 : end]
            self.pos = end + 1
        else:
            chunk = self.take(4)
            if chunk is None:
                return False
            raw = self.take(chunk[3])
            if raw is None:
                return False
            payload = raw
        self.flush(force=False)
        symbology = _BARCODES.get(m, f"m={m}")
        text = payload.decode("latin-1")
        if symbology == "CODE128" and text[:2] in ("{A", "{B"):
            text = text[2:].replace("{{", "{")
        self.items.append(BarcodeItem(symbology, text))
        return True

    def gs_paren(self) -> bool:  # GS ( fn pL pH body
        header = self.take(5)
        if header is None:
            return False
        body = self.take(int.from_bytes(header[3:5], "little"))
        if body is None:
            return False
        if header[2] != ord("k") or len(body) < 2 or body[0] != 49:  # 49: QR Code
            self.items.append(Unknown(header + body))
            return True
        fn, params = body[1], body[2:]
        if fn == 67 and params:
            self.qr_size = params[0]
        elif fn == 69 and params:
            self.qr_level = _QR_LEVELS.get(params[0], "?")
        elif fn == 80:
            self.qr_data = params[1:]  # after m = 48
        elif fn == 81:
            self.flush(force=False)
            text = self.qr_data.decode("utf-8", errors="replace")
            self.items.append(QrCode(text, self.qr_size, self.qr_level))
        elif fn != 65:
            self.items.append(Unknown(header + body))
        return True

    def gs_raster(self) -> bool:  # GS v 0 m xL xH yL yH data: an image, kept as Unknown
        header = self.take(8)
        if header is None:
            return False
        size = int.from_bytes(header[4:6], "little") * int.from_bytes(header[6:8], "little")
        body = self.take(size)
        if body is None:
            return False
        self.flush(force=False)
        self.items.append(Unknown(header))
        return True

    def dle_eot(self) -> bool:
        chunk = self.take(3)
        if chunk is None:
            return False
        self.items.append(StatusQuery(chunk[2]))
        return True

    def dle_pulse(self) -> bool:  # DLE DC4 1 m t: real-time drawer pulse
        chunk = self.take(5)
        if chunk is None:
            return False
        if chunk[2] == 1:
            self.items.append(DrawerKickItem(chunk[3] & 1, chunk[4] * 100, chunk[4] * 100))
        else:
            self.items.append(Unknown(chunk))
        return True


_HANDLERS = {
    b"\x1b@": _Decoder.esc_init,
    b"\x1ba": _Decoder.esc_align,
    b"\x1bE": _Decoder.esc_bold,
    b"\x1b!": _Decoder.esc_mode,
    b"\x1bd": _Decoder.esc_feed,
    b"\x1bp": _Decoder.esc_drawer,
    b"\x1bi": _Decoder.esc_cut,
    b"\x1bm": _Decoder.esc_cut,
    b"\x1d!": _Decoder.gs_size,
    b"\x1dV": _Decoder.gs_cut,
    b"\x1dk": _Decoder.gs_barcode,
    b"\x1d(": _Decoder.gs_paren,
    b"\x1dv": _Decoder.gs_raster,
    b"\x10\x04": _Decoder.dle_eot,
    b"\x10\x14": _Decoder.dle_pulse,
}


def decode_escpos(data: bytes, encoding: str = "gb18030") -> list[DecodedItem]:
    """What ``data`` makes an ESC/POS printer do, in order (see the module docstring)."""
    return _Decoder(bytes(data), encoding).run()


def text_lines(items: list[DecodedItem]) -> list[str]:
    """Just the printed text, one string per line."""
    return [item.text for item in items if isinstance(item, TextLine)]
