"""``python -m gpt_mapping core`` with the ISS backend: halting and non-halting programs,
faults, assembly errors, --mem output, and the RTL backend's placeholder."""

import json
import subprocess
import sys

import pytest

from gpt_mapping import core_cli
from runtime.sim import ROOT

HALTING = """
        li   r1, 0x12345FFF
        li   r2, 0x8000
        sw   r1, 0(r2)
        sw   r2, 4(r2)
        addi r3, r0, -1
        halt
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_main(tmp_path, source, *options, backend="iss"):
    prog = write(tmp_path, "prog.s", source)
    out = tmp_path / "out" / "result.json"
    code = core_cli.main([str(prog), "--backend", backend, "--json", str(out), *options])
    return code, (json.loads(out.read_text()) if out.exists() else None)


def test_halting_program_through_python_m(tmp_path):
    prog = write(tmp_path, "prog.s", HALTING)
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "gpt_mapping", "core", str(prog),
                           "--backend", "iss", "--mem", "0x8000:3", "--mem", "32768:1",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "halted at PC 0x0018 after 7 instructions" in proc.stdout
    report = json.loads(out.read_text())
    assert set(report) == {"regs", "halted", "cycles", "retired", "mem"}
    assert report["regs"] == [0, 0x12345FFF, 0x8000, 0xFFFFFFFF] + [0] * 12
    assert report["halted"] is True
    assert report["retired"] == 7 and report["cycles"] == 5 + 7
    assert report["mem"] == {"0x8000": [0x12345FFF, 0x8000, 0], "32768": [0x12345FFF]}


def test_non_halting_program_names_its_pc(tmp_path, capsys):
    code, report = run_main(tmp_path, "nop\nloop: addi r1, r1, 1\nbeq r0, r0, loop\n",
                            "--max-cycles", "200")
    assert code == 1
    err = capsys.readouterr().err
    assert "did not halt within 200 cycles: the core was at PC 0x00" in err
    assert "`addi r1, r1, 1`" in err or "`beq r0, r0, 0x4`" in err
    assert report["halted"] is False and 195 <= report["cycles"] <= 204
    assert report["regs"][1] > 0


def test_fault_names_code_pc_and_instruction(tmp_path, capsys):
    code, report = run_main(tmp_path, "addi r1, r0, 2\nlw r2, 0(r1)\nhalt\n")
    assert code == 1
    assert ("fault CORE_MISALIGNED at PC 0x0004 (`lw r2, 0(r1)`): load address 0x2 is not "
            "a multiple of 4") in capsys.readouterr().err
    assert report["halted"] is False and report["retired"] == 1 and report["regs"][1] == 2


def test_idle_core_does_not_halt(tmp_path, capsys):
    code, report = run_main(tmp_path, "addi r1, r0, 1\ntend\n")
    assert code == 1
    assert "the core went idle at PC 0x0004 (`tend`)" in capsys.readouterr().err
    assert report["halted"] is False


def test_recv_without_input_waits_forever(tmp_path, capsys):
    code, report = run_main(tmp_path, "recv r1, 2\nhalt\n")
    assert code == 1
    assert "would wait forever" in capsys.readouterr().err
    assert report["halted"] is False and report["retired"] == 0


def test_assembly_error_names_line_and_token(tmp_path, capsys):
    code, report = run_main(tmp_path, "nop\nnop\nadd r16, r1, r2\nhalt\n")
    assert code == 2 and report is None
    err = capsys.readouterr().err
    assert "prog.s: line 3: 'r16': no register r16 (r0..r15)" in err


def test_tasks_from_the_program(tmp_path):
    code, report = run_main(tmp_path, ".task 4, t4, 0\nli r5, 0x30007\ntact 4, r5\ntend\n"
                                      "t4: add r6, r1, r2\nhalt\n")
    assert code == 0
    assert report["regs"][1:7] == [7, 3, 0x30007, 0, 0x30007, 10]


@pytest.mark.parametrize("mem, why", [
    ("0x8002:1", "not a byte address that is a multiple of 4"),
    ("0xBFFC:2", "not inside the SRAM"),
    ("0x8000", "expected START:COUNT"),
    ("x:1", "expected START:COUNT"),
    ("0x8000:0", "COUNT must be at least 1"),
])
def test_bad_mem_ranges(tmp_path, capsys, mem, why):
    code, report = run_main(tmp_path, HALTING, "--mem", mem)
    assert code == 2 and report is None
    err = capsys.readouterr().err
    assert f"--mem {mem!r}" in err and why in err


def test_program_larger_than_the_sram(tmp_path, capsys):
    code, _ = run_main(tmp_path, ".org 0xC000\nhalt\n")
    assert code == 2
    assert "past the SRAM" in capsys.readouterr().err


def test_missing_file(tmp_path, capsys):
    code = core_cli.main([str(tmp_path / "none.s"), "--backend", "iss", "--json",
                          str(tmp_path / "o.json")])
    assert code == 2 and "none.s: no such file" in capsys.readouterr().err


def test_rtl_is_the_default_backend():
    assert core_cli.build_parser().parse_args(["p.s", "--json", "o.json"]).backend == "rtl"


@pytest.mark.rtl
def test_rtl_and_iss_give_the_same_registers_memory_and_retired_count(tmp_path, capsys):
    """SPEC 4.5: --backend iss and rtl agree (the cycle counts are each backend's own)."""
    reports = {}
    for backend in ("iss", "rtl"):
        code, reports[backend] = run_main(tmp_path / backend, HALTING, "--mem", "0x8000:2",
                                          backend=backend)
        assert code == 0, capsys.readouterr()
    iss, rtl = reports["iss"], reports["rtl"]
    assert rtl["regs"] == iss["regs"] and rtl["retired"] == iss["retired"] == 7
    assert rtl["mem"] == iss["mem"] == {"0x8000": [0x12345FFF, 0x8000]}
    assert rtl["halted"] is True and rtl["cycles"] > 0


@pytest.mark.rtl
def test_rtl_backend_names_the_pc_of_a_program_that_does_not_halt(tmp_path, capsys):
    code, report = run_main(tmp_path, "addi r1, r0, 1\nloop: beq r0, r0, loop\n",
                            "--max-cycles", "300", backend="rtl")
    err = capsys.readouterr().err
    assert code == 1 and report["halted"] is False and report["regs"][1] == 1
    assert "did not halt within 300 cycles" in err and "PC 0x0004 (`beq" in err
    code, report = run_main(tmp_path, "li r1, 3\nlw r2, 0(r1)\nhalt\n", backend="rtl")
    err = capsys.readouterr().err
    assert code == 1 and "fault CORE_MISALIGNED at PC 0x0004 (`lw r2, 0(r1)`)" in err


def test_help_says_where_code_is_placed(capsys):
    with pytest.raises(SystemExit):
        core_cli.main(["--help"])
    assert "placed at byte address 0" in " ".join(capsys.readouterr().out.split())


def test_command_is_registered():
    from gpt_mapping import __main__ as cli_main
    assert cli_main.COMMANDS["core"][0] == "gpt_mapping.core_cli"
