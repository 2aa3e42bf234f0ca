# Block design '{{ bd_name }}' for {{ board.title }} ({{ board.part }}): the {{ ps.vlnv.split(':')[2] }} processing system,
# the shiftpu accelerator on {{ ps.hp_slave }} ({{ board.hp_port_bits }} bit) and {{ ps.register_master }}, fabric clock {{ clock_mhz }} MHz,
# reset, interrupt and address map. Sourced by build.tcl inside its project (expects $use_board_preset).
create_bd_design {{ bd_name }}

set ps [create_bd_cell -type ip -vlnv {{ ps.vlnv }} {{ ps.cell }}]
apply_bd_automation -rule {{ ps.automation_rule }} -config [list {% for key, value in automation_config.items() %}{{ key }} {{ '{' }}{{ value }}{{ '}' }} {% endfor %}apply_board_preset $use_board_preset] $ps
set_property -dict [list \
{%- for key, value in ps_config.items() %}
    CONFIG.{{ key }} {{ '{' }}{{ value }}{{ '}' }} \
{%- endfor %}
] $ps

set accel [create_bd_cell -type ip -vlnv {{ ip_vlnv }} {{ accel_cell }}]
set reset [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset proc_sys_reset_0]
set regs_ic [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect regs_interconnect]
set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $regs_ic
{%- if data_interconnect %}
# The accelerator's {{ cfg.axi_data_bits }}-bit master is narrower than the {{ board.hp_port_bits }}-bit HP port: a SmartConnect converts.
set data_ic [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect data_interconnect]
set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $data_ic
{%- endif %}

# One clock: fabric clock 0 drives the accelerator, both interconnects and both PS ports.
connect_bd_net [get_bd_pins $ps/{{ ps.fabric_clock }}] \
    [get_bd_pins $ps/{{ ps.register_master_clock }}] [get_bd_pins $ps/{{ ps.hp_slave_clock }}] \
    [get_bd_pins $accel/clk] [get_bd_pins $reset/slowest_sync_clk] [get_bd_pins $regs_ic/aclk]
{%- if data_interconnect %}
connect_bd_net [get_bd_pins $ps/{{ ps.fabric_clock }}] [get_bd_pins $data_ic/aclk]
{%- endif %}

# Reset: the PS reset, synchronised; the accelerator's reset is active high.
connect_bd_net [get_bd_pins $ps/{{ ps.fabric_resetn }}] [get_bd_pins $reset/ext_reset_in]
connect_bd_net [get_bd_pins $reset/peripheral_reset] [get_bd_pins $accel/rst]
connect_bd_net [get_bd_pins $reset/interconnect_aresetn] [get_bd_pins $regs_ic/aresetn]
{%- if data_interconnect %}
connect_bd_net [get_bd_pins $reset/interconnect_aresetn] [get_bd_pins $data_ic/aresetn]
{%- endif %}

# Registers: PS master -> AXI4-Lite slave. Data: accelerator AXI4 master -> HP0 -> DDR.
connect_bd_intf_net [get_bd_intf_pins $ps/{{ ps.register_master }}] [get_bd_intf_pins $regs_ic/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins $regs_ic/M00_AXI] [get_bd_intf_pins $accel/s_axi]
{%- if data_interconnect %}
connect_bd_intf_net [get_bd_intf_pins $accel/m_axi] [get_bd_intf_pins $data_ic/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins $data_ic/M00_AXI] [get_bd_intf_pins $ps/{{ ps.hp_slave }}]
{%- else %}
connect_bd_intf_net [get_bd_intf_pins $accel/m_axi] [get_bd_intf_pins $ps/{{ ps.hp_slave }}]
{%- endif %}

# Interrupt: level, active high.
connect_bd_net [get_bd_pins $accel/irq] [get_bd_pins $ps/{{ ps.irq_pin }}]

# Address map: registers at {{ register_base }} ({{ register_range }} bytes); DDR visible to the accelerator's master.
assign_bd_address -offset {{ register_base }} -range {{ register_range }} \
    -target_address_space [get_bd_addr_spaces {{ ps.data_space }}] [get_bd_addr_segs {{ accel_cell }}/s_axi/reg0] -force
assign_bd_address -target_address_space [get_bd_addr_spaces {{ accel_cell }}/m_axi] [get_bd_addr_segs {{ ps.ddr_segment }}] -force

validate_bd_design
save_bd_design
