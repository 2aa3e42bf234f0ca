"""Checks that a ``.bit`` file is a Xilinx bitstream for the board's part, and that its ``.hwh`` describes it.

A ``.bit`` written by Vivado's ``write_bitstream`` starts with a header of tagged fields (after a fixed preamble):
``a`` design name, ``b`` part, ``c`` date, ``d`` time (each a 2-byte big-endian length and NUL-terminated text),
then ``e``: a 4-byte big-endian length and the configuration data. The data holds the configuration sync word
``AA 99 55 66`` near its start, and is megabytes long for any Zynq device. A placeholder (such as the simulated
device's ``.bit``) or a truncated copy fails here with a message naming what is wrong, before it goes to a board.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from shiftpu.errors import ShiftpuError

#: The fixed start of every .bit: a 9-byte field (0FF0 x4, 00) and the 2-byte count before the first tag.
PREAMBLE = bytes.fromhex("0009 0ff00ff00ff00ff000 0001")
#: The configuration sync word.
SYNC_WORD = bytes.fromhex("aa995566")
#: Fewest bytes of configuration data taken as a real bitstream: a whole Zynq-7000 xc7z007s takes about 2 MB
#: uncompressed; a compressed bitstream of a design that fills a fair part of the device is still above this.
MIN_DATA_BYTES = 256 * 1024
#: Where the sync word must appear (after the padding and bus-width detection words).
SYNC_SEARCH_BYTES = 1024


class BitstreamError(ShiftpuError):
    """A .bit or .hwh file that is not what the board needs."""


@dataclass(frozen=True)
class BitHeader:
    """What the header of a .bit says."""

    design: str
    part: str
    date: str
    time: str
    data_bytes: int


def device_of(part: str) -> str:
    """The device of a part name as Vivado writes it in either place: ``xc7z020clg400-1`` and ``7z020clg400`` both
    give ``7z020clg400``, ``xczu3eg-sbva484-1-i`` gives ``zu3eg``."""
    return part.strip().lower().removeprefix("xc").split("-")[0]


def read_bit_header(path: Path) -> BitHeader:
    """Parse and check the header of a .bit (raises BitstreamError naming the file and the fault)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BitstreamError(f"{path}: cannot read the bitstream: {e.strerror or e}") from None
    if not data.startswith(PREAMBLE):
        raise BitstreamError(f"{path}: not a Xilinx bitstream (.bit): its {len(data)} bytes do not start with the "
                             "header that Vivado's write_bitstream writes")
    fields: dict[str, str] = {}
    pos = len(PREAMBLE)
    for tag in "abcd":
        if data[pos: pos + 1] != tag.encode():
            raise BitstreamError(f"{path}: damaged bitstream header: field '{tag}' missing at byte {pos}")
        n = int.from_bytes(data[pos + 1: pos + 3], "big")
        if pos + 3 + n > len(data):
            raise BitstreamError(f"{path}: damaged bitstream header: field '{tag}' cut short at byte {pos}")
        fields[tag] = data[pos + 3: pos + 3 + n].rstrip(b"\0").decode("ascii", errors="replace")
        pos += 3 + n
    if data[pos: pos + 1] != b"e" or pos + 5 > len(data):
        raise BitstreamError(f"{path}: damaged bitstream header: no configuration data field at byte {pos}")
    length = int.from_bytes(data[pos + 1: pos + 5], "big")
    start = pos + 5
    if len(data) - start != length:
        raise BitstreamError(f"{path}: truncated or padded bitstream: the header announces {length} bytes of "
                             f"configuration data, the file holds {len(data) - start}")
    if SYNC_WORD not in data[start: start + SYNC_SEARCH_BYTES]:
        raise BitstreamError(f"{path}: no configuration sync word (AA995566) at the start of the configuration data")
    return BitHeader(design=fields["a"].split(";")[0], part=fields["b"], date=fields["c"], time=fields["d"],
                     data_bytes=length)


def check_bitstream(bit: Path, hwh: Path, part: str) -> BitHeader:
    """Refuse a .bit that is not a Xilinx bitstream of a plausible size for ``part``, or whose .hwh describes
    another device or lacks the accelerator."""
    header = read_bit_header(bit)
    if not device_of(part).startswith(device_of(header.part)):
        raise BitstreamError(f"{bit}: built for part {header.part}, but the board's part is {part}")
    if header.data_bytes < MIN_DATA_BYTES:
        raise BitstreamError(f"{bit}: only {header.data_bytes} bytes of configuration data, too few for a "
                             f"{part} design (at least {MIN_DATA_BYTES // 1024} KiB)")
    _check_hwh(hwh, part)
    return header


def _check_hwh(hwh: Path, part: str) -> None:
    from shiftpu.boards.vivado import ACCEL_CELL

    try:
        root = ET.parse(hwh).getroot()
    except (OSError, ET.ParseError) as e:
        raise BitstreamError(f"{hwh}: not a readable hardware handoff (.hwh): {e}") from None
    info = root.find("SYSTEMINFO")
    device = info.get("DEVICE", "") if info is not None else ""
    if not device:
        raise BitstreamError(f"{hwh}: no SYSTEMINFO DEVICE: not a hardware handoff written by Vivado")
    if not device_of(part).startswith(device_of(device)):
        raise BitstreamError(f"{hwh}: describes device {device}, but the board's part is {part}")
    if not any(m.get("INSTANCE") == ACCEL_CELL for m in root.iter("MODULE")):
        raise BitstreamError(f"{hwh}: has no {ACCEL_CELL} module: the overlay holds no shiftpu accelerator")
