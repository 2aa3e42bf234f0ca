"""AXI4 protocol checks on the accelerator's ``m_axi`` port, compiled into the simulation.

:func:`checker_verilog` gives the Verilog of a counter ``axi_protocol_errors`` (part of the simulation
top, shiftpu.sim.rtl.harness). It counts, every cycle and in the simulator (no Python per cycle):
AR/AW/W payload or VALID changing while VALID waits for READY, bursts longer than ``max_burst_beats``,
bursts crossing a 4 KiB boundary, a burst type other than INCR or a size other than the bus width, and
W bursts whose WLAST does not match the length of the corresponding AW burst.
"""

from __future__ import annotations

from shiftpu.arch.config import AccelConfig

#: Depth of the queues pairing AW bursts with W bursts.
QUEUE_DEPTH = 64


def _channel_checks(ch: str, cfg: AccelConfig, size: int, prefix: str) -> str:
    a = f"{prefix}_{ch}"
    return f"""
  // {ch.upper()} channel
  reg {ch}_wait; reg [{cfg.axi_addr_bits - 1}:0] {ch}_addr_q; reg [7:0] {ch}_len_q;
  wire [12:0] {ch}_end = {{1'b0, {a}addr[11:0]}} + (({{5'b0, {a}len}} + 13'd1) << {size});
  wire {ch}_unstable = {ch}_wait && (!{a}valid || {a}addr != {ch}_addr_q || {a}len != {ch}_len_q);
  wire {ch}_bad = {a}valid && ({a}len >= 8'd{cfg.max_burst_beats} || {a}burst != 2'b01 || {a}size != 3'd{size}
                               || {ch}_end > 13'd4096);
  always @(posedge clk) begin
    {ch}_wait <= !rst && {a}valid && !{a}ready;
    {ch}_addr_q <= {a}addr;
    {ch}_len_q <= {a}len;
  end
"""


def checker_verilog(cfg: AccelConfig, prefix: str) -> str:
    """Verilog statements checking the AXI4 master whose signals are named ``{prefix}_*``.

    They declare and drive ``reg [31:0] axi_protocol_errors`` (cleared by ``rst``).
    """
    size = (cfg.axi_bytes - 1).bit_length()
    qb = (QUEUE_DEPTH - 1).bit_length()
    p = prefix
    return (_channel_checks("ar", cfg, size, p) + _channel_checks("aw", cfg, size, p) + f"""
  // W channel: stable while waiting, WLAST where the matching AW burst ends
  reg w_wait; reg [{cfg.axi_data_bits - 1}:0] w_data_q; reg [{cfg.axi_bytes - 1}:0] w_strb_q; reg w_last_q;
  wire w_unstable = w_wait && (!{p}_wvalid || {p}_wdata != w_data_q || {p}_wstrb != w_strb_q
                               || {p}_wlast != w_last_q);
  reg [8:0] aw_q [0:{QUEUE_DEPTH - 1}]; reg [8:0] w_q [0:{QUEUE_DEPTH - 1}];
  reg [{qb}:0] aw_wr, aw_rd, w_wr, w_rd;
  reg [8:0] w_count;
  wire pair = (aw_wr != aw_rd) && (w_wr != w_rd);
  wire w_len_bad = pair && aw_q[aw_rd[{qb - 1}:0]] != w_q[w_rd[{qb - 1}:0]];
  always @(posedge clk) begin
    w_wait <= !rst && {p}_wvalid && !{p}_wready;
    w_data_q <= {p}_wdata; w_strb_q <= {p}_wstrb; w_last_q <= {p}_wlast;
    if (rst) begin
      aw_wr <= 0; aw_rd <= 0; w_wr <= 0; w_rd <= 0; w_count <= 0; axi_protocol_errors <= 0;
    end else begin
      if ({p}_awvalid && {p}_awready) begin
        aw_q[aw_wr[{qb - 1}:0]] <= {{1'b0, {p}_awlen}} + 9'd1; aw_wr <= aw_wr + 1;
      end
      if ({p}_wvalid && {p}_wready) begin
        if ({p}_wlast) begin
          w_q[w_wr[{qb - 1}:0]] <= w_count + 9'd1; w_wr <= w_wr + 1; w_count <= 0;
        end else w_count <= w_count + 9'd1;
      end
      if (pair) begin aw_rd <= aw_rd + 1; w_rd <= w_rd + 1; end
      axi_protocol_errors <= axi_protocol_errors + ar_unstable + ar_bad + aw_unstable + aw_bad + w_unstable
                             + w_len_bad;
    end
  end
""")


def checker_module(cfg: AccelConfig, name: str = "axi_checker") -> str:
    """A stand-alone module that observes an AXI4 master ``mon_axi_*`` (all inputs): tests the checker."""
    from amaranth import Shape

    from shiftpu.hw.axi_master import read_port_members, write_port_members
    from shiftpu.hw.params import HwParams

    p = HwParams(cfg)
    members = {**read_port_members(p), **write_port_members(p)}
    ports = ",\n".join(f"  input wire [{Shape.cast(mb.shape).width - 1}:0] mon_axi_{n}" for n, mb in members.items())
    return f"""module {name} (
  input wire clk, input wire rst,
{ports},
  output reg [31:0] axi_protocol_errors
);
{checker_verilog(cfg, "mon_axi")}
endmodule
"""
