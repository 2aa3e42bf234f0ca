"""A stand-in accelerator for the flow tests: the contract's top-level ports around a tiny register file.

Used only where the hardware generator (shiftpu.hw.emit) is not installed; it is never shipped. It lets
the Vivado flow and the Yosys estimate be tested on a module whose interface matches the contract.
"""

from __future__ import annotations

import re

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.regmap import OFFSET, REGISTER_SPACE_BYTES

#: AXI4 master signals (direction seen from the accelerator, width or a config field name).
MASTER_PORTS = (
    ("output", "awaddr", "addr"), ("output", "awlen", 8), ("output", "awsize", 3), ("output", "awburst", 2),
    ("output", "awvalid", 1), ("input", "awready", 1),
    ("output", "wdata", "data"), ("output", "wstrb", "strb"), ("output", "wlast", 1), ("output", "wvalid", 1),
    ("input", "wready", 1), ("input", "bresp", 2), ("input", "bvalid", 1), ("output", "bready", 1),
    ("output", "araddr", "addr"), ("output", "arlen", 8), ("output", "arsize", 3), ("output", "arburst", 2),
    ("output", "arvalid", 1), ("input", "arready", 1),
    ("input", "rdata", "data"), ("input", "rresp", 2), ("input", "rlast", 1), ("input", "rvalid", 1),
    ("output", "rready", 1),
)
#: AXI4-Lite slave signals (32-bit data, 8-bit address).
SLAVE_PORTS = (
    ("input", "awaddr", 8), ("input", "awvalid", 1), ("output", "awready", 1),
    ("input", "wdata", 32), ("input", "wstrb", 4), ("input", "wvalid", 1), ("output", "wready", 1),
    ("output", "bresp", 2), ("output", "bvalid", 1), ("input", "bready", 1),
    ("input", "araddr", 8), ("input", "arvalid", 1), ("output", "arready", 1),
    ("output", "rdata", 32), ("output", "rresp", 2), ("output", "rvalid", 1), ("input", "rready", 1),
)


def _width(spec: int | str, cfg: AccelConfig) -> int:
    return {"addr": cfg.axi_addr_bits, "data": cfg.axi_data_bits, "strb": cfg.axi_data_bits // 8}.get(spec, spec)  # type: ignore[arg-type]


def standin_verilog(cfg: AccelConfig) -> str:
    """Verilog of module shiftpu_accel with the contract's ports: a register file that answers CONFIG_HASH,
    a scratch memory the master reads into, and the interrupt."""
    ports = ["input wire clk", "input wire rst", "output wire irq"]
    for prefix, table in (("m_axi", MASTER_PORTS), ("s_axi", SLAVE_PORTS)):
        for direction, name, spec in table:
            w = _width(spec, cfg)
            rng = f"[{w - 1}:0] " if w > 1 else ""
            kind = "reg" if direction == "output" and prefix == "s_axi" and name in ("rdata", "rvalid", "bvalid") else "wire"
            ports.append(f"{direction} {kind} {rng}{prefix}_{name}")
    d = cfg.axi_data_bits
    body = f"""
  localparam [31:0] CONFIG_HASH = 32'h{cfg.config_hash():08x};
  reg [31:0] ctrl, irq_enable, irq_status;
  reg [{d - 1}:0] scratch [0:511];
  reg [8:0] wptr;
  reg [{d - 1}:0] mem_q;
  reg [7:0] rd_addr;
  assign irq = |(irq_status & irq_enable);
  assign s_axi_awready = 1'b1;
  assign s_axi_wready = 1'b1;
  assign s_axi_arready = !s_axi_rvalid;
  assign s_axi_bresp = 2'b00;
  assign s_axi_rresp = 2'b00;
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
  assign m_axi_araddr = ctrl;
  assign m_axi_arlen = {cfg.max_burst_beats - 1};
  assign m_axi_arsize = {(cfg.axi_data_bits // 8).bit_length() - 1};
  assign m_axi_arburst = 2'b01;
  assign m_axi_arvalid = ctrl[0];
  assign m_axi_rready = 1'b1;
  assign m_axi_awaddr = 0;
  assign m_axi_awlen = 0;
  assign m_axi_awsize = 0;
  assign m_axi_awburst = 2'b01;
  assign m_axi_awvalid = 1'b0;
  assign m_axi_wdata = 0;
  assign m_axi_wstrb = 0;
  assign m_axi_wlast = 1'b0;
  assign m_axi_wvalid = 1'b0;
  assign m_axi_bready = 1'b1;
"""
    assert REGISTER_SPACE_BYTES == 0x100  # the 8-bit s_axi address decodes the whole register space
    return "module shiftpu_accel(\n  " + ",\n  ".join(ports) + "\n);\n" + body + "endmodule\n"


def test_standin_has_the_contract_ports():
    cfg = AccelConfig(axi_data_bits=128, axi_addr_bits=40)
    text = standin_verilog(cfg)
    found = {name: rng for rng, name in re.findall(r"^\s*(?:input|output) (?:wire|reg) (\[\d+:0\] )?(\w+)", text, re.M)}
    assert found["m_axi_wdata"] == "[127:0] "
    assert found["m_axi_wstrb"] == "[15:0] "
    assert found["m_axi_araddr"] == "[39:0] "
    assert found["s_axi_araddr"] == "[7:0] "
    assert found["s_axi_rdata"] == "[31:0] "
    assert {"clk", "rst", "irq"} <= set(found)
    assert len(found) == 3 + len(MASTER_PORTS) + len(SLAVE_PORTS)
