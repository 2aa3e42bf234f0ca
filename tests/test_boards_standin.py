"""A stand-in accelerator for the flow tests: the real top's ports around a tiny register file.

The Vivado flow and the Yosys estimate are tested on it because it synthesises in seconds; it is never shipped.
Its ports are generated from the generator's own port members (``shiftpu.hw.top.top_members``: the AXI4 master
of ``shiftpu.hw.axi_master``, the AXI4-Lite slave of ``shiftpu.hw.axil_regs``, ``irq``), so it cannot drift
from the real top; outputs the register file does not use are tied to 0.
"""

from __future__ import annotations

import re

import pytest

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.regmap import OFFSET, REGISTER_SPACE_BYTES

#: s_axi outputs the stand-in's register file drives from registers (the others are assigned).
REG_OUTPUTS = ("s_axi_rdata", "s_axi_rvalid", "s_axi_bvalid")


def _ports(cfg: AccelConfig) -> dict[str, tuple[str, int]]:
    """name -> (Verilog direction, width) of the real top's ports (needs Amaranth, the hw extra)."""
    pytest.importorskip("amaranth")
    from amaranth import Shape
    from amaranth.lib import wiring

    from shiftpu.hw.params import HwParams
    from shiftpu.hw.top import top_members

    ports = {"clk": ("input", 1), "rst": ("input", 1)}
    for name, member in top_members(HwParams(cfg)).items():
        ports[name] = ("output" if member.flow == wiring.Out else "input", Shape.cast(member.shape).width)
    return ports


def standin_verilog(cfg: AccelConfig) -> str:
    """Verilog of module shiftpu_accel with the real top's ports: a register file that answers CONFIG_HASH,
    a scratch memory the master reads into, and the interrupt."""
    ports = _ports(cfg)
    declared = []
    for name, (direction, w) in ports.items():
        rng = f"[{w - 1}:0] " if w > 1 else ""
        declared.append(f"{direction} {'reg' if name in REG_OUTPUTS else 'wire'} {rng}{name}")
    d = cfg.axi_data_bits
    body = f"""
  localparam [31:0] CONFIG_HASH = 32'h{cfg.config_hash():08x};
  reg [31:0] ctrl, irq_enable, irq_status;
  reg [{d - 1}:0] scratch [0:511];
  reg [8:0] wptr;
  reg [{d - 1}:0] mem_q;
  always @(posedge clk) begin
    if (rst) begin
      ctrl <= 0; irq_enable <= 0; irq_status <= 0; s_axi_bvalid <= 0; s_axi_rvalid <= 0; wptr <= 0;
    end else begin
      if (s_axi_awvalid && s_axi_wvalid) begin
        s_axi_bvalid <= 1'b1;
        case (s_axi_awaddr)
          8'h{OFFSET["CTRL"]:02x}: ctrl <= s_axi_wdata;
          8'h{OFFSET["IRQ_ENABLE"]:02x}: irq_enable <= s_axi_wdata;
          8'h{OFFSET["IRQ_STATUS"]:02x}: irq_status <= irq_status & ~s_axi_wdata;
          default: ;
        endcase
      end else if (s_axi_bready) s_axi_bvalid <= 1'b0;
      if (s_axi_arvalid && !s_axi_rvalid) begin
        s_axi_rvalid <= 1'b1;
        case (s_axi_araddr)
          8'h{OFFSET["CONFIG_HASH"]:02x}: s_axi_rdata <= CONFIG_HASH;
          8'h{OFFSET["IRQ_STATUS"]:02x}: s_axi_rdata <= irq_status;
          default: s_axi_rdata <= mem_q[31:0];
        endcase
      end else if (s_axi_rready) s_axi_rvalid <= 1'b0;
      if (m_axi_rvalid) begin
        scratch[wptr] <= m_axi_rdata;
        wptr <= wptr + 1'b1;
        if (m_axi_rlast) irq_status <= 32'd1;
      end
    end
    mem_q <= scratch[s_axi_araddr];
  end
"""
    driven = {
        "irq": "|(irq_status & irq_enable)", "s_axi_awready": "1'b1", "s_axi_wready": "1'b1",
        "s_axi_arready": "!s_axi_rvalid", "m_axi_araddr": "ctrl", "m_axi_arlen": str(cfg.max_burst_beats - 1),
        "m_axi_arsize": str((cfg.axi_data_bits // 8).bit_length() - 1), "m_axi_arburst": "2'b01",
        "m_axi_arvalid": "ctrl[0]", "m_axi_rready": "1'b1", "m_axi_awburst": "2'b01", "m_axi_bready": "1'b1",
    }
    body += "".join(f"  assign {name} = {driven.get(name, 0)};\n" for name, (direction, _) in ports.items()
                    if direction == "output" and name not in REG_OUTPUTS)
    assert REGISTER_SPACE_BYTES == 0x100  # the 8-bit s_axi address decodes the whole register space
    return "module shiftpu_accel(\n  " + ",\n  ".join(declared) + "\n);\n" + body + "endmodule\n"


@pytest.mark.parametrize("cfg", [AccelConfig(), AccelConfig(axi_data_bits=128, axi_addr_bits=40)])
def test_standin_has_the_ports_of_the_generated_top(cfg):
    pytest.importorskip("amaranth")
    from amaranth import Shape
    from amaranth.lib import wiring

    from shiftpu.hw.top import Accelerator

    text = standin_verilog(cfg)
    found = {name: (direction, int(msb) + 1 if msb else 1) for direction, msb, name in
             re.findall(r"^\s*(input|output) (?:wire|reg) (?:\[(\d+):0\] )?(\w+)", text, re.M)}
    top = Accelerator(cfg).signature.members
    assert found == {"clk": ("input", 1), "rst": ("input", 1)} | {
        name: ("output" if m.flow == wiring.Out else "input", Shape.cast(m.shape).width) for name, m in top.items()}
    assert found["m_axi_wdata"] == ("output", cfg.axi_data_bits)
    assert found["m_axi_araddr"] == ("output", cfg.axi_addr_bits)
    assert found["s_axi_araddr"] == ("input", 8)
    assert {"m_axi_arid", "m_axi_awlock", "m_axi_arcache", "m_axi_awprot"} <= set(found)
    # every output is driven exactly once
    outputs = [n for n, (d, _) in found.items() if d == "output"]
    driven = re.findall(r"^\s*assign (\w+) =", text, re.M) + list(REG_OUTPUTS)
    assert sorted(driven) == sorted(outputs)
