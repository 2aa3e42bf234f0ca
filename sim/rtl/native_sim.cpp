// The native RTL simulation of the shiftpu accelerator: the clock, the AXI4-Lite master and the memory in C++.
//
// Built by shiftpu.sim.rtl.native together with the Verilator model of shiftpu_accel_native (shiftpu.sim.rtl.bridge)
// into one shared library that Python loads with ctypes and keeps for every run. No Python runs per cycle: Python
// loads the memory, asks for a reset, a few register accesses and "run until the interrupt", and reads the memory
// back. Each run gets a fresh model instance (every register and RAM of the accelerator as at power-up, as a new
// simulator process would have it) inside the one library.
//
// At every rising edge the bridge module calls shiftpu_tick with the accelerator's outputs as they were just before
// the edge; shiftpu_tick answers with what the AXI4-Lite master and the memory drive just after it. Two memories:
//
// * MEMORY_AXI_RAM: the timing of cocotbext-axi's AxiRam as it runs under cocotb (the reference memory of the
//   cocotb path, whose cycle counts the performance model is calibrated on). Each AXI channel is a stream sink or
//   source with a queue of two; a read process turns AR commands into R beats and a write process W beats into
//   memory writes and B responses. Under cocotb, at every edge all channel coroutines run first on the values
//   sampled before the edge (phase A) and the two processes only after them, woken by the events those set
//   (phase B); a sink's ready is its queue's room after its own push and before the process takes from it. The
//   process coroutines sleep and wake on events, but each wakes in the same time step that changes what it waits
//   for, so running both phases at every edge gives the same cycles.
// * MEMORY_COMPILED: the RAM of shiftpu.sim.rtl.sim_ram, register for register (its Verilog is the reference),
//   with its optional read latency. Bursts from RAM_BYTES on are answered SLVERR.

#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "verilated.h"
#include "Vshiftpu_native.h"
#include "Vshiftpu_native__Dpi.h"

namespace {

constexpr int MEMORY_AXI_RAM = 0;
constexpr int MEMORY_COMPILED = 1;
constexpr int AXI_QUEUE = 2;       // queue_occupancy_limit of every AxiRam channel
constexpr int READ_QUEUE = 16;     // shiftpu.sim.rtl.sim_ram.READ_QUEUE
constexpr int SLVERR = 2;
constexpr int MAX_WORDS = 4;       // 32-bit words of the widest bus (128 bits)

struct Beat {
    uint32_t data[MAX_WORDS] = {};
    uint32_t strb = 0;
    bool last = false;
};

struct Burst {
    uint64_t addr = 0;
    uint32_t beats = 0;
};

// What the accelerator drives, sampled just before an edge.
struct Sampled {
    bool irq, arvalid, rready, awvalid, wlast, wvalid, bready;
    uint64_t araddr, awaddr;
    uint32_t arlen, awlen, wstrb;
    const svBitVecVal* wdata;
    bool s_awready, s_wready, s_bvalid, s_arready, s_rvalid;
    uint32_t s_rdata;
};

// What the memory drives after the edge.
struct MemoryOut {
    bool arready = false, rlast = false, rvalid = false, awready = false, wready = false, wready_with_aw = false;
    bool bvalid = false;
    uint32_t rdata[MAX_WORDS] = {};
    int rresp = 0, bresp = 0;
};

class Memory {
  public:
    std::vector<uint8_t> bytes;
    uint64_t size = 0;    // addresses are taken modulo size (AxiRam) or masked to it (compiled RAM)
    uint64_t dirty = 0;   // bytes from 0 that may be non-zero

    void resize(uint64_t n) {
        if (bytes.size() < n) bytes.resize(n, 0);
        size = n;
    }
    void clear() {
        std::memset(bytes.data(), 0, std::min<uint64_t>(dirty, bytes.size()));
        dirty = 0;
    }
    void touch(uint64_t end) { dirty = std::max(dirty, end); }
};

// cocotbext-axi's AxiRam as cocotb runs it (see the file comment).
class AxiRamModel {
  public:
    AxiRamModel(Memory& mem, int nb) : mem_(mem), nb_(nb) {}

    void reset() {
        ar_ready_ = aw_ready_ = w_ready_ = r_valid_ = b_valid_ = false;
        ar_q_.clear(); r_q_.clear(); aw_q_.clear(); w_q_.clear(); b_q_.clear();
        r_active_ = w_active_ = b_pending_ = false;
        r_cur_ = Beat();
    }

    void edge(const Sampled& in, bool rst, MemoryOut& out) {
        if (rst) {
            reset();
        } else {
            // phase A: the channel coroutines, on the values sampled before the edge
            if (ar_ready_ && in.arvalid) ar_q_.push_back({in.araddr, in.arlen + 1});
            ar_ready_ = ar_q_.size() < AXI_QUEUE;
            if (!r_valid_ || in.rready) {
                r_valid_ = !r_q_.empty();
                if (r_valid_) { r_cur_ = r_q_.front(); r_q_.pop_front(); }
            }
            if (aw_ready_ && in.awvalid) aw_q_.push_back({in.awaddr, in.awlen + 1});
            aw_ready_ = aw_q_.size() < AXI_QUEUE;
            if (w_ready_ && in.wvalid) {
                Beat b;
                std::memcpy(b.data, in.wdata, nb_);
                b.strb = in.wstrb;
                b.last = in.wlast;
                w_q_.push_back(b);
            }
            w_ready_ = w_q_.size() < AXI_QUEUE;
            if (!b_valid_ || in.bready) {
                b_valid_ = !b_q_.empty();
                if (b_valid_) b_q_.pop_front();
            }
            // phase B: the read and write processes
            read_process();
            write_process();
        }
        out.arready = ar_ready_;
        out.rvalid = r_valid_;
        out.rlast = r_cur_.last;
        std::memcpy(out.rdata, r_cur_.data, nb_);
        out.rresp = 0;
        out.awready = aw_ready_;
        out.wready = w_ready_;
        out.wready_with_aw = false;
        out.bvalid = b_valid_;
        out.bresp = 0;
    }

  private:
    void read_process() {
        for (;;) {
            if (!r_active_) {
                if (ar_q_.empty()) return;
                r_burst_ = ar_q_.front();
                ar_q_.pop_front();
                r_burst_.addr &= ~uint64_t(nb_ - 1);
                r_active_ = true;
            }
            while (r_burst_.beats && r_q_.size() < AXI_QUEUE) {
                Beat b;
                std::memcpy(b.data, &mem_.bytes[r_burst_.addr % mem_.size], nb_);
                b.last = r_burst_.beats == 1;
                r_q_.push_back(b);
                r_burst_.addr += nb_;
                --r_burst_.beats;
            }
            if (r_burst_.beats) return;
            r_active_ = false;
        }
    }

    void write_process() {
        for (;;) {
            if (b_pending_) {
                if (b_q_.size() >= AXI_QUEUE) return;
                b_q_.push_back(0);
                b_pending_ = false;
            }
            if (!w_active_) {
                if (aw_q_.empty()) return;
                w_burst_ = aw_q_.front();
                aw_q_.pop_front();
                w_burst_.addr &= ~uint64_t(nb_ - 1);
                w_active_ = true;
            }
            while (w_burst_.beats && !w_q_.empty()) {
                const Beat& b = w_q_.front();
                uint64_t base = w_burst_.addr % mem_.size;
                auto* data = reinterpret_cast<const uint8_t*>(b.data);
                for (int k = 0; k < nb_; ++k)
                    if (b.strb >> k & 1) mem_.bytes[base + k] = data[k];
                mem_.touch(base + nb_);
                w_q_.pop_front();
                w_burst_.addr += nb_;
                --w_burst_.beats;
            }
            if (w_burst_.beats) return;
            w_active_ = false;
            b_pending_ = true;
        }
    }

    Memory& mem_;
    int nb_;
    bool ar_ready_ = false, aw_ready_ = false, w_ready_ = false, r_valid_ = false, b_valid_ = false;
    std::deque<Burst> ar_q_, aw_q_;
    std::deque<Beat> r_q_, w_q_;
    std::deque<int> b_q_;
    Beat r_cur_;
    Burst r_burst_, w_burst_;
    bool r_active_ = false, w_active_ = false, b_pending_ = false;
};

// The compiled RAM of shiftpu.sim.rtl.sim_ram, register for register.
class CompiledRamModel {
  public:
    CompiledRamModel(Memory& mem, int nb, uint64_t ram_bytes)
        : mem_(mem), nb_(nb), ram_bytes_(ram_bytes), words_(ram_bytes / nb) {}

    // every register as the Verilog's initial state (zero), and the read latency of the run
    void power_up(uint32_t rlat) {
        r_ = Registers();
        rlat_ = rlat;
    }

    void edge(const Sampled& in, bool rst, MemoryOut& out) {
        Registers& r = r_;
        const bool queued = rlat_ != 0;
        // the RAM's outputs before the edge, as its continuous assignments give them
        const bool arready = queued ? r.q_n < READ_QUEUE : r.r_left == 0;
        const bool rvalid = r.r_left != 0;
        const bool awready = !r.w_active && (queued ? r.bq_n < READ_QUEUE : !r.b_one);
        const bool bvalid = queued ? r.bq_n != 0 && r.now >= r.bq_due[r.bq_rp] : r.b_one;
        const bool aw_fire = in.awvalid && awready;
        const bool wready = r.w_active || aw_fire;
        const uint64_t w_cur = r.w_active ? r.w_addr : word(in.awaddr);
        const bool w_cur_outside = r.w_active ? r.w_outside : in.awaddr >= ram_bytes_;
        const bool w_fire = in.wvalid && wready;
        const bool w_done = w_fire && in.wlast;
        const bool bq_pop = queued && bvalid && in.bready;
        const bool q_push = queued && in.arvalid && arready;
        const bool q_pop = queued && r.q_n != 0 && r.now >= r.q_due[r.q_rp]
                           && (r.r_left == 0 || (rvalid && in.rready && r.r_left == 1));
        if (rst) {
            r.r_left = 0; r.w_active = false; r.b_one = false; r.now = 0; r.q_wp = r.q_rp = r.q_n = 0;
            r.bq_wp = r.bq_rp = r.bq_n = 0;
        } else {
            // the Verilog's non-blocking assignments: right-hand sides from `r` (before the edge) and the
            // constants above, a later assignment winning
            Registers n = r;
            n.now = r.now + 1;
            if (queued) {
                if (q_push) {
                    n.q_addr[r.q_wp] = word(in.araddr); n.q_len[r.q_wp] = in.arlen + 1;
                    n.q_due[r.q_wp] = r.now + rlat_; n.q_out[r.q_wp] = in.araddr >= ram_bytes_;
                    n.q_wp = (r.q_wp + 1) % READ_QUEUE;
                }
                if (rvalid && in.rready) { n.r_addr = (r.r_addr + 1) % words_; n.r_left = r.r_left - 1; }
                if (q_pop) {
                    n.r_addr = r.q_addr[r.q_rp]; n.r_left = r.q_len[r.q_rp]; n.r_outside = r.q_out[r.q_rp];
                    n.q_rp = (r.q_rp + 1) % READ_QUEUE;
                }
                n.q_n = r.q_n + q_push - q_pop;
            } else if (in.arvalid && arready) {
                n.r_addr = word(in.araddr); n.r_left = in.arlen + 1; n.r_outside = in.araddr >= ram_bytes_;
            } else if (rvalid && in.rready) {
                n.r_addr = (r.r_addr + 1) % words_; n.r_left = r.r_left - 1;
            }
            if (aw_fire) { n.w_addr = word(in.awaddr); n.w_active = true; n.w_outside = in.awaddr >= ram_bytes_; }
            if (w_fire && !w_cur_outside) {
                uint8_t* dst = &mem_.bytes[w_cur * nb_];
                auto* data = reinterpret_cast<const uint8_t*>(in.wdata);
                for (int k = 0; k < nb_; ++k)
                    if (in.wstrb >> k & 1) dst[k] = data[k];
                mem_.touch((w_cur + 1) * nb_);
            }
            if (w_fire) {
                n.w_addr = (w_cur + 1) % words_;
                if (in.wlast) n.w_active = false;
            }
            if (w_done && !queued) { n.b_one = true; n.b_one_resp = w_cur_outside ? SLVERR : 0; }
            else if (r.b_one && in.bready) n.b_one = false;
            if (w_done && queued) {
                n.bq_due[r.bq_wp] = r.now + rlat_ + 1; n.bq_resp[r.bq_wp] = w_cur_outside ? SLVERR : 0;
                n.bq_wp = (r.bq_wp + 1) % READ_QUEUE;
            }
            if (bq_pop) n.bq_rp = (r.bq_rp + 1) % READ_QUEUE;
            if (queued) n.bq_n = r.bq_n + w_done - bq_pop;
            r = n;
        }
        // the outputs after the edge
        out.arready = queued ? r.q_n < READ_QUEUE : r.r_left == 0;
        out.rvalid = r.r_left != 0;
        out.rlast = r.r_left == 1;
        std::memcpy(out.rdata, &mem_.bytes[r.r_addr * nb_], nb_);
        out.rresp = r.r_outside ? SLVERR : 0;
        out.awready = !r.w_active && (queued ? r.bq_n < READ_QUEUE : !r.b_one);
        out.wready = r.w_active;
        out.wready_with_aw = true;
        out.bvalid = queued ? r.bq_n != 0 && r.now >= r.bq_due[r.bq_rp] : r.b_one;
        out.bresp = queued ? r.bq_resp[r.bq_rp] : r.b_one_resp;
    }

  private:
    struct Registers {
        uint64_t r_addr = 0, w_addr = 0;
        uint32_t r_left = 0, now = 0;
        bool r_outside = false, w_active = false, w_outside = false, b_one = false;
        int b_one_resp = 0;
        uint64_t q_addr[READ_QUEUE] = {};
        uint32_t q_len[READ_QUEUE] = {}, q_due[READ_QUEUE] = {};
        bool q_out[READ_QUEUE] = {};
        uint32_t q_wp = 0, q_rp = 0, q_n = 0;
        uint32_t bq_due[READ_QUEUE] = {};
        int bq_resp[READ_QUEUE] = {};
        uint32_t bq_wp = 0, bq_rp = 0, bq_n = 0;
    };

    uint64_t word(uint64_t addr) const { return (addr / nb_) % words_; }

    Memory& mem_;
    int nb_;
    uint64_t ram_bytes_, words_;
    uint32_t rlat_ = 0;
    Registers r_;
};

// What the AXI4-Lite master drives (BREADY and RREADY are always high, WSTRB all ones).
struct LiteOut {
    uint32_t addr = 0, data = 0;
    bool write_valid = false;  // AWVALID and WVALID: the register file takes address and data together
    bool read_valid = false;   // ARVALID
};

// The AXI4-Lite master: one register access at a time, its valid signals held until their handshake.
class LiteMaster {
  public:
    void reset() { *this = LiteMaster(); }
    bool idle() const { return state_ == State::IDLE; }
    uint32_t result() const { return result_; }
    const LiteOut& out() const { return out_; }

    void write(uint32_t addr, uint32_t data) { state_ = State::WRITE; out_.addr = addr; out_.data = data; }
    void read(uint32_t addr) { state_ = State::READ; out_.addr = addr; }

    void edge(const Sampled& in, bool rst) {
        if (rst) return;
        switch (state_) {
            case State::IDLE: break;
            case State::WRITE:
                if (out_.write_valid && in.s_awready && in.s_wready) {
                    out_.write_valid = false;
                    state_ = State::WRITE_RESP;
                } else {
                    out_.write_valid = true;
                }
                break;
            case State::WRITE_RESP:
                if (in.s_bvalid) state_ = State::IDLE;
                break;
            case State::READ:
                if (out_.read_valid && in.s_arready) {
                    out_.read_valid = false;
                    state_ = State::READ_DATA;
                } else {
                    out_.read_valid = true;
                }
                break;
            case State::READ_DATA:
                if (in.s_rvalid) { result_ = in.s_rdata; state_ = State::IDLE; }
                break;
        }
    }

  private:
    enum class State { IDLE, WRITE, WRITE_RESP, READ, READ_DATA };
    State state_ = State::IDLE;
    LiteOut out_;
    uint32_t result_ = 0;
};

class Simulation {
  public:
    Simulation(int nb, uint64_t ram_bytes)
        : nb_(nb), axi_ram_(memory_, nb), compiled_(memory_, nb, ram_bytes), ram_bytes_(ram_bytes) {
        context_.reset(new VerilatedContext);
        context_->fatalOnError(true);
    }

    // a fresh model, the memory cleared and sized, reset held for `reset_cycles` cycles
    void begin(int kind, uint64_t mem_bytes, uint32_t read_latency, int reset_cycles) {
        model_.reset();
        kind_ = kind;
        memory_.clear();
        memory_.resize(kind == MEMORY_COMPILED ? ram_bytes_ : mem_bytes);
        axi_ram_.reset();
        compiled_.power_up(read_latency);
        lite_.reset();
        rst_ = rst_driven_ = true;
        irq_seen_ = false;
        model_.reset(new Vshiftpu_native(context_.get(), ""));
        model_->clk = 0;
        model_->eval();
        cycles(reset_cycles);
        rst_ = false;
    }

    void cycles(uint64_t n) {
        for (uint64_t k = 0; k < n; ++k) cycle();
    }

    // cycles until the interrupt was seen at an edge, at most `limit`; returns the cycles run
    uint64_t run_until_irq(uint64_t limit, bool* irq) {
        irq_seen_ = false;
        uint64_t k = 0;
        while (k < limit && !irq_seen_) { cycle(); ++k; }
        *irq = irq_seen_;
        return k;
    }

    void reg_write(uint32_t addr, uint32_t data, uint64_t limit) {
        lite_.write(addr, data);
        finish_access(limit);
    }

    uint32_t reg_read(uint32_t addr, uint64_t limit) {
        lite_.read(addr);
        finish_access(limit);
        return lite_.result();
    }

    void tick(const Sampled& in, MemoryOut& mem_out) {
        irq_seen_ = irq_seen_ || in.irq;
        const bool rst_before = rst_driven_;
        if (kind_ == MEMORY_COMPILED) compiled_.edge(in, rst_before, mem_out);
        else axi_ram_.edge(in, rst_before, mem_out);
        lite_.edge(in, rst_before);
        rst_driven_ = rst_;
    }

    Memory& memory() { return memory_; }
    int bus_bytes() const { return nb_; }
    Vshiftpu_native* model() { return model_.get(); }
    const LiteMaster& lite() const { return lite_; }
    bool rst_driven() const { return rst_driven_; }

  private:
    void cycle() {
        model_->clk = 1;
        model_->eval();
        model_->clk = 0;
        model_->eval();
    }

    void finish_access(uint64_t limit) {
        for (uint64_t k = 0; !lite_.idle(); ++k) {
            if (k == limit) throw std::runtime_error("an AXI4-Lite register access got no answer");
            cycle();
        }
    }

    int nb_;
    Memory memory_;
    AxiRamModel axi_ram_;
    CompiledRamModel compiled_;
    LiteMaster lite_;
    uint64_t ram_bytes_;
    int kind_ = MEMORY_AXI_RAM;
    bool rst_ = true, rst_driven_ = true, irq_seen_ = false;
    std::unique_ptr<VerilatedContext> context_;
    std::unique_ptr<Vshiftpu_native> model_;
};

Simulation* g_current = nullptr;  // the simulation whose model is being evaluated
thread_local std::string g_error;

template <typename F>
int guarded(Simulation* sim, F&& f) {
    g_current = sim;
    try {
        f();
        return 0;
    } catch (const std::exception& e) {
        g_error = e.what();
    } catch (...) {
        g_error = "an unknown C++ exception";
    }
    return -1;
}

}  // namespace

// Verilator's fatal errors become exceptions, so that a failing model does not end the Python process.
void vl_fatal(const char* filename, int linenum, const char* /*hier*/, const char* msg) {
    std::string where = filename ? std::string(filename) + ":" + std::to_string(linenum) : "";
    throw std::runtime_error("Verilator: " + std::string(msg) + (where.empty() ? "" : " (" + where + ")"));
}

void shiftpu_tick(svBit irq, long long araddr, int arlen, svBit arvalid, svBit rready, long long awaddr, int awlen,
                  svBit awvalid, const svBitVecVal* wdata, int wstrb, svBit wlast, svBit wvalid, svBit bready,
                  svBit s_awready, svBit s_wready, svBit s_bvalid, svBit s_arready, svBit s_rvalid, int s_rdata,
                  svBit* rst, svBit* arready, svBitVecVal* rdata, int* rresp, svBit* rlast, svBit* rvalid,
                  svBit* awready, svBit* wready, svBit* wready_with_aw, int* bresp, svBit* bvalid,
                  long long* s_awaddr, svBit* s_awvalid, int* s_wdata, svBit* s_wvalid, long long* s_araddr,
                  svBit* s_arvalid) {
    Simulation* sim = g_current;
    Sampled in{irq != 0, arvalid != 0, rready != 0, awvalid != 0, wlast != 0, wvalid != 0, bready != 0,
               static_cast<uint64_t>(araddr), static_cast<uint64_t>(awaddr), static_cast<uint32_t>(arlen),
               static_cast<uint32_t>(awlen), static_cast<uint32_t>(wstrb), wdata, s_awready != 0, s_wready != 0,
               s_bvalid != 0, s_arready != 0, s_rvalid != 0, static_cast<uint32_t>(s_rdata)};
    MemoryOut out;
    sim->tick(in, out);
    *rst = sim->rst_driven();
    *arready = out.arready;
    std::memcpy(rdata, out.rdata, sim->bus_bytes());
    *rresp = out.rresp;
    *rlast = out.rlast;
    *rvalid = out.rvalid;
    *awready = out.awready;
    *wready = out.wready;
    *wready_with_aw = out.wready_with_aw;
    *bresp = out.bresp;
    *bvalid = out.bvalid;
    const LiteOut& lite = sim->lite().out();
    *s_awaddr = lite.addr;
    *s_awvalid = lite.write_valid;
    *s_wdata = static_cast<int>(lite.data);
    *s_wvalid = lite.write_valid;
    *s_araddr = lite.addr;
    *s_arvalid = lite.read_valid;
}

extern "C" {

const char* shiftpu_last_error() { return g_error.c_str(); }

void* shiftpu_open(int bus_bytes, unsigned long long ram_bytes) {
    try {
        return new Simulation(bus_bytes, ram_bytes);
    } catch (const std::exception& e) {
        g_error = e.what();
        return nullptr;
    }
}

int shiftpu_begin(void* h, int kind, unsigned long long mem_bytes, unsigned read_latency, int reset_cycles) {
    auto* sim = static_cast<Simulation*>(h);
    return guarded(sim, [&] { sim->begin(kind, mem_bytes, read_latency, reset_cycles); });
}

int shiftpu_mem_write(void* h, unsigned long long addr, const uint8_t* data, unsigned long long n) {
    auto* sim = static_cast<Simulation*>(h);
    return guarded(sim, [&] {
        Memory& m = sim->memory();
        if (addr + n > m.size) throw std::runtime_error("memory image beyond the simulated memory");
        std::memcpy(&m.bytes[addr], data, n);
        m.touch(addr + n);
    });
}

int shiftpu_mem_read(void* h, unsigned long long addr, uint8_t* data, unsigned long long n) {
    auto* sim = static_cast<Simulation*>(h);
    return guarded(sim, [&] {
        const Memory& m = sim->memory();
        if (addr + n > m.size) throw std::runtime_error("read beyond the simulated memory");
        std::memcpy(data, &m.bytes[addr], n);
    });
}

int shiftpu_cycles(void* h, unsigned long long n) {
    auto* sim = static_cast<Simulation*>(h);
    return guarded(sim, [&] { sim->cycles(n); });
}

int shiftpu_run_until_irq(void* h, unsigned long long limit, unsigned long long* ran, int* irq) {
    auto* sim = static_cast<Simulation*>(h);
    return guarded(sim, [&] {
        bool seen = false;
        *ran = sim->run_until_irq(limit, &seen);
        *irq = seen;
    });
}

int shiftpu_reg_write(void* h, unsigned addr, unsigned data, unsigned long long limit) {
    auto* sim = static_cast<Simulation*>(h);
    return guarded(sim, [&] { sim->reg_write(addr, data, limit); });
}

int shiftpu_reg_read(void* h, unsigned addr, unsigned long long limit, unsigned* value) {
    auto* sim = static_cast<Simulation*>(h);
    return guarded(sim, [&] { *value = sim->reg_read(addr, limit); });
}

int shiftpu_outputs(void* h, int* irq, unsigned* protocol_errors) {
    auto* sim = static_cast<Simulation*>(h);
    return guarded(sim, [&] {
        *irq = sim->model()->irq;
        *protocol_errors = sim->model()->axi_protocol_errors;
    });
}

}  // extern "C"
