# A stand-in for Vivado's Tcl commands, for running the generated flow in a plain Tcl interpreter.
# Every Vivado command is recorded in ::calls; reports, bitstream and hwh are written as files.
# Settings (set before sourcing a script): ::board_parts, ::wns, ::whs, ::sample_util, ::sample_timing,
# ::make_hwh, ::echo (print messages to stdout); optional: ::clock_period (ns, default 5.0), ::accel_clocks (the
# clocks on the accelerator's clk pin, default clk_pl_0), ::sample_worst (what report_timing writes, default
# ::sample_timing).
if {![info exists ::clock_period]} { set ::clock_period 5.0 }
if {![info exists ::accel_clocks]} { set ::accel_clocks clk_pl_0 }
if {![info exists ::sample_worst]} { set ::sample_worst $::sample_timing }
set ::calls {}
set ::busifs [dict create]
set ::messages {}
namespace eval ipx {}

proc record {args} { lappend ::calls $args }
proc unknown {args} { record {*}$args; return "" }
rename puts _puts
proc puts {args} {
    lappend ::messages [lindex $args end]
    if {$::echo} { _puts stdout [lindex $args end] }
}
proc exit {{code 0}} { record exit $code; return -code error "exit $code" }

proc create_project {args} {
    record create_project {*}$args
    set ::project_name [lindex $args end-1]
    set ::project_dir [lindex $args end]
    return $::project_name
}
proc get_board_parts {args} { record get_board_parts {*}$args; return $::board_parts }
proc ipx::current_core {} { return core }
proc ipx::infer_bus_interfaces {vlnv core} {
    record ipx::infer_bus_interfaces $vlnv $core
    if {$vlnv eq "xilinx.com:interface:aximm_rtl:1.0"} {
        dict set ::busifs m_axi master
        dict set ::busifs s_axi slave
    }
}
proc ipx::infer_bus_interface {port vlnv core} {
    record ipx::infer_bus_interface $port $vlnv $core
    dict set ::busifs $port [expr {$port eq "irq" ? "master" : "slave"}]
}
proc ipx::get_bus_interfaces {name args} {
    if {[dict exists $::busifs $name]} { return busif:$name }
    return ""
}
proc get_property {name obj} {
    switch -- $name {
        interface_mode { return [dict get $::busifs [string range $obj 6 end]] }
        SLACK { return [expr {$obj eq "path:setup" ? $::wns : $::whs}] }
        PERIOD { return $::clock_period }
        STARTPOINT_PIN { return "[string range $obj 5 end]_start_reg/C" }
        ENDPOINT_PIN { return "[string range $obj 5 end]_end_reg/D" }
        default { return "" }
    }
}
proc get_timing_paths {args} { return [expr {"-setup" in $args ? "path:setup" : "path:hold"}] }
proc get_pins {args} { record get_pins {*}$args; return pins:[lindex $args end] }
proc get_clocks {args} { record get_clocks {*}$args; return $::accel_clocks }
proc report_timing {args} {
    record report_timing {*}$args
    set f [open $::sample_worst]; set text [read $f]; close $f
    if {"-file" in $args} { file copy -force $::sample_worst [lindex $args [expr {[lsearch $args -file] + 1}]] }
    if {"-return_string" in $args} { return $text }
    return ""
}
proc ipx::get_bus_parameters {name args} { return "" }
proc ipx::add_bus_parameter {name busif} { record ipx::add_bus_parameter $name $busif; return param:$busif:$name }
proc set_property {args} { record set_property {*}$args }
proc get_files {name} { return file:$name }
proc make_wrapper {args} { record make_wrapper {*}$args; return $::project_dir/shiftpu_wrapper.v }
proc generate_target {args} {
    record generate_target {*}$args
    if {$::make_hwh} {
        set dir [file join $::project_dir $::project_name.gen sources_1 bd shiftpu hw_handoff]
        file mkdir $dir
        set f [open [file join $dir shiftpu.hwh] w]; _puts $f "<hwh/>"; close $f
    }
}
proc create_bd_cell {args} { record create_bd_cell {*}$args; return [lindex $args end] }
proc get_bd_pins {name} { return pin:$name }
proc get_bd_intf_pins {name} { return intf:$name }
proc get_bd_addr_spaces {name} { return space:$name }
proc get_bd_addr_segs {name} { return seg:$name }
proc report_utilization {args} { record report_utilization {*}$args; file copy -force $::sample_util [lindex $args end] }
proc report_timing_summary {args} { record report_timing_summary {*}$args; file copy -force $::sample_timing [lindex $args end] }
proc write_bitstream {args} {
    record write_bitstream {*}$args
    set f [open [lindex $args end] w]; _puts $f "bitstream"; close $f
}
