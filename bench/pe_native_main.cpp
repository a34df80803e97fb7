// Native Verilator harness of the PE (bench/pe_bench.py --native): simulated cycles per
// second with no cocotb/VPI in the loop. Reads "address value" configuration writes from
// argv[2] (the last one is the host trigger that starts the work), re-issues the trigger
// every 4000 cycles, and reports idle and busy speed.
#include "Vpe.h"
#include "verilated.h"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    long cycles = argc > 1 ? atol(argv[1]) : 1000000;
    std::vector<std::pair<unsigned, unsigned>> writes;
    if (FILE* f = argc > 2 ? fopen(argv[2], "r") : nullptr) {
        unsigned a, v;
        while (fscanf(f, "%u %u", &a, &v) == 2) writes.push_back({a, v});
        fclose(f);
    }
    Vpe* top = new Vpe;
    auto tick = [&]() { top->clk = 0; top->eval(); top->clk = 1; top->eval(); };
    top->rst = 1; tick(); tick(); top->rst = 0;
    top->tx___05Fready = 0xFFFFFF;
    auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < cycles; i++) tick();
    double idle = cycles / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (auto& w : writes) {
        top->cfg___05Faddr = w.first; top->cfg___05Fwdata = w.second; top->cfg___05Fwe = 1; tick();
    }
    top->cfg___05Fwe = 0;
    long busy_cycles = 0;
    t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < cycles; i++) {
        if (i % 4000 == 0 && !writes.empty()) {
            top->cfg___05Faddr = writes.back().first; top->cfg___05Fwdata = writes.back().second;
            top->cfg___05Fwe = 1;
        } else {
            top->cfg___05Fwe = 0;
        }
        tick();
        busy_cycles += top->busy;
    }
    double busy = cycles / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("{\"idle_cycles_per_s\": %.0f, \"busy_cycles_per_s\": %.0f, \"busy_fraction\": %.3f}\n",
           idle, busy, (double)busy_cycles / cycles);
    delete top;
    return 0;
}
