"""How the accelerator attaches to each processing-system family in a Vivado block design.

The block-design template is generic; everything that differs between Zynq-7000 and Zynq UltraScale+
(IP, pin names, configuration keys, register base address, DDR segment) is here, once per family.
"""

from __future__ import annotations

from dataclasses import dataclass

from shiftpu.arch.regmap import REGISTER_SPACE_BYTES
from shiftpu.boards.board import Board, PsFamily

#: Smallest address range Vivado's address editor assigns to an AXI slave.
MIN_ADDRESS_RANGE = 0x1000


@dataclass(frozen=True)
class PsAttachment:
    """One PS family's side of the accelerator's connections (names as Vivado's PS IP spells them)."""

    vlnv: str  #: the PS IP
    cell: str  #: its instance name in the block design
    automation_rule: str  #: apply_bd_automation rule that applies the board preset (DDR, MIO)
    automation_config: dict[str, str]  #: its -config entries besides apply_board_preset
    register_master: str  #: PS AXI master interface that reaches the accelerator's registers
    register_master_clock: str  #: its clock pin
    hp_slave: str  #: PS AXI slave (HP0) the accelerator masters
    hp_slave_clock: str  #: its clock pin
    enable_keys: tuple[str, ...]  #: CONFIG keys set to 1: register master, HP0, fabric clock 0 and reset, IRQ
    disable_keys: tuple[str, ...]  #: CONFIG keys set to 0: other PS masters that board presets enable
    hp_width_key: str  #: CONFIG key of HP0's data width
    register_width_key: str | None  #: CONFIG key of the register master's data width (None: fixed at 32)
    clock_freq_key: str  #: CONFIG key of fabric clock 0's frequency in MHz
    fabric_clock: str  #: fabric clock 0 output pin
    fabric_resetn: str  #: fabric reset 0 output pin (active low)
    irq_pin: str  #: fabric-to-PS interrupt input pin
    data_space: str  #: address space of the PS masters
    ddr_segment: str  #: the HP0 segment that maps DDR (assigned to the accelerator's master)
    register_base: int  #: address of the accelerator's registers in the PS address map


ATTACHMENTS: dict[PsFamily, PsAttachment] = {
    PsFamily.ZYNQ7000: PsAttachment(
        vlnv="xilinx.com:ip:processing_system7", cell="processing_system7_0",
        automation_rule="xilinx.com:bd_rule:processing_system7",
        automation_config={"make_external": "FIXED_IO, DDR", "Master": "Disable", "Slave": "Disable"},
        register_master="M_AXI_GP0", register_master_clock="M_AXI_GP0_ACLK",
        hp_slave="S_AXI_HP0", hp_slave_clock="S_AXI_HP0_ACLK",
        enable_keys=("PCW_USE_M_AXI_GP0", "PCW_USE_S_AXI_HP0", "PCW_EN_CLK0_PORT", "PCW_EN_RST0_PORT",
                     "PCW_USE_FABRIC_INTERRUPT", "PCW_IRQ_F2P_INTR"),
        disable_keys=("PCW_USE_M_AXI_GP1",),
        hp_width_key="PCW_S_AXI_HP0_DATA_WIDTH", register_width_key=None,
        clock_freq_key="PCW_FPGA0_PERIPHERAL_FREQMHZ",
        fabric_clock="FCLK_CLK0", fabric_resetn="FCLK_RESET0_N", irq_pin="IRQ_F2P",
        data_space="processing_system7_0/Data", ddr_segment="processing_system7_0/S_AXI_HP0/HP0_DDR_LOWOCM",
        register_base=0x43C0_0000,
    ),
    PsFamily.ZYNQMP: PsAttachment(
        vlnv="xilinx.com:ip:zynq_ultra_ps_e", cell="zynq_ultra_ps_e_0",
        automation_rule="xilinx.com:bd_rule:zynq_ultra_ps_e",
        automation_config={},
        register_master="M_AXI_HPM0_FPD", register_master_clock="maxihpm0_fpd_aclk",
        hp_slave="S_AXI_HP0_FPD", hp_slave_clock="saxihp0_fpd_aclk",
        enable_keys=("PSU__USE__M_AXI_GP0", "PSU__USE__S_AXI_GP2", "PSU__FPGA_PL0_ENABLE", "PSU__USE__IRQ0"),
        disable_keys=("PSU__USE__M_AXI_GP1", "PSU__USE__M_AXI_GP2"),
        hp_width_key="PSU__SAXIGP2__DATA_WIDTH", register_width_key="PSU__MAXIGP0__DATA_WIDTH",
        clock_freq_key="PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ",
        fabric_clock="pl_clk0", fabric_resetn="pl_resetn0", irq_pin="pl_ps_irq0",
        data_space="zynq_ultra_ps_e_0/Data", ddr_segment="zynq_ultra_ps_e_0/SAXIGP2/HP0_DDR_LOW",
        register_base=0xA000_0000,
    ),
}


def ps_config(board: Board, clock_mhz: float) -> dict[str, str]:
    """CONFIG properties of the board's PS IP (applied after its board preset), fabric clock 0 at clock_mhz."""
    ps = ATTACHMENTS[board.ps_family]
    config = {key: "1" for key in ps.enable_keys}
    config.update({key: "0" for key in ps.disable_keys})
    config[ps.hp_width_key] = str(board.hp_port_bits)
    if ps.register_width_key is not None:
        config[ps.register_width_key] = "32"
    config[ps.clock_freq_key] = f"{clock_mhz:g}"
    return config


def register_range() -> int:
    """Address range assigned to the accelerator's registers (the register space, at least 4 KiB)."""
    return max(MIN_ADDRESS_RANGE, REGISTER_SPACE_BYTES)
