"""The accelerator's AXI4-Lite register map (32-bit registers, byte offsets).

The RTL register file, the runtime driver, the simulated devices and the Vivado IP packaging read
their offsets from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

#: Value of the read-only ID register: ASCII "SHPU".
IP_MAGIC = 0x55504853
#: Bytes of AXI4-Lite address space the accelerator decodes.
REGISTER_SPACE_BYTES = 0x100


class Access(Enum):
    RW = "rw"  #: read/write
    RO = "ro"  #: read-only
    W1S = "w1s"  #: write 1 to trigger, reads 0
    W1C = "w1c"  #: write 1 to clear


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: Access
    doc: str


class Ctrl(IntEnum):
    """Bits of CTRL (write 1 to act; both read 0)."""

    START = 0  #: write 1: fetch the program at CONST_BASE and run it (ignored while busy or with SOFT_RESET)
    SOFT_RESET = 1  #: write 1: abort the run, drain the AXI4 master, every engine back to idle (STATUS.ABORTED)


class Status(IntEnum):
    """Bits of STATUS."""

    BUSY = 0  #: a run, or the drain of a soft reset, is in progress
    DONE = 1  #: the last run reached END (cleared by START and SOFT_RESET)
    ERROR = 2  #: the last run stopped on an error (see ERROR_CODE; cleared by START and SOFT_RESET)
    ABORTED = 3  #: SOFT_RESET was written since the last START; with BUSY clear the accelerator is idle again


#: How a soft reset (``CTRL.SOFT_RESET``) ends, in words: the contract every device model implements.
SOFT_RESET_SEMANTICS = (
    "Writing CTRL.SOFT_RESET stops the run in progress, if any, and holds the sequencer and its engines at their "
    "power-on state while the AXI4 master finishes what it has in flight: an address already offered is kept "
    "until it is taken, the beats of the read bursts already addressed are accepted and dropped, the write bursts "
    "already addressed are completed with WSTRB 0 (a write beat already offered goes out unchanged first) and "
    "every write response is taken. STATUS reads BUSY | ABORTED meanwhile and ABORTED alone once every engine is "
    "idle (a few cycles, plus the memory's outstanding bursts); START is ignored until then. The reset clears "
    "DONE, ERROR, ERROR_CODE and PC, and keeps CONST_BASE, ACT_BASE, IRQ_ENABLE, IRQ_STATUS and the counters of "
    "the cut-off run (CYCLES counts the drain too); it raises no interrupt. The bit reads 0 (it clears itself); "
    "written together with START, START is ignored. Written while idle, it only sets ABORTED."
)


class Irq(IntEnum):
    """Bits of IRQ_ENABLE and IRQ_STATUS."""

    DONE = 0  #: run finished (END or error)


class ErrorCode(IntEnum):
    """Values of ERROR_CODE."""

    NONE = 0
    BAD_MAGIC = 1  #: the program header's magic is wrong (CONST_BASE does not point at a program)
    ISA_VERSION = 2  #: the program was compiled for another ISA version
    CONFIG_HASH = 3  #: the program was compiled for another AccelConfig
    ILLEGAL_OPCODE = 4
    BAD_FIELD = 5  #: an instruction field exceeds what this accelerator supports
    AXI_READ = 6  #: a read on the AXI4 master returned SLVERR/DECERR
    AXI_WRITE = 7  #: a write on the AXI4 master returned SLVERR/DECERR
    NO_END = 8  #: n_instr instructions ran without reaching END


REGISTERS: tuple[Register, ...] = (
    Register("CTRL", 0x00, Access.W1S, "bit 0 START, bit 1 SOFT_RESET"),
    Register("STATUS", 0x04, Access.RO, "bit 0 BUSY, bit 1 DONE, bit 2 ERROR, bit 3 ABORTED"),
    Register("ERROR_CODE", 0x08, Access.RO, "ErrorCode of the last run (0: none, also after a soft reset)"),
    Register("IRQ_ENABLE", 0x0C, Access.RW, "bit 0: raise the interrupt when a run finishes"),
    Register("IRQ_STATUS", 0x10, Access.W1C, "bit 0: a run finished (write 1 to acknowledge)"),
    Register("CONST_BASE", 0x14, Access.RW, "physical address of the constant segment (program header at offset 0, weights, bias tables)"),
    Register("ACT_BASE", 0x18, Access.RW, "physical address of the activation segment (inputs, intermediates, outputs)"),
    Register("CYCLES_LO", 0x20, Access.RO, "clock cycles of the last run, low word"),
    Register("CYCLES_HI", 0x24, Access.RO, "clock cycles of the last run, high word"),
    Register("STALL_LO", 0x28, Access.RO, "cycles the PE array waited on memory, low word"),
    Register("STALL_HI", 0x2C, Access.RO, "cycles the PE array waited on memory, high word"),
    Register("INSTR_RETIRED", 0x30, Access.RO, "instructions completed in the last run"),
    Register("PC", 0x34, Access.RO, "index of the current (or failing) instruction (0 after a soft reset)"),
    Register("CONFIG_HASH", 0x38, Access.RO, "AccelConfig.config_hash() the hardware was generated from"),
    Register("ISA_VERSION", 0x3C, Access.RO, "ISA version the hardware decodes"),
    Register("IP_ID", 0x40, Access.RO, f"0x{IP_MAGIC:08x} (b'SHPU')"),
    Register("RD_BEATS", 0x44, Access.RO, "AXI4 read beats of the last run"),
    Register("WR_BEATS", 0x48, Access.RO, "AXI4 write beats of the last run"),
)

REG = {r.name: r for r in REGISTERS}
#: name -> byte offset
OFFSET = {r.name: r.offset for r in REGISTERS}


def markdown_table() -> str:
    lines = ["| offset | register | access | meaning |", "|---|---|---|---|"]
    for r in REGISTERS:
        lines.append(f"| 0x{r.offset:02X} | `{r.name}` | {r.access.value} | {r.doc} |")
    return "\n".join(lines)
