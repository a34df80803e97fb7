"""The fabric host runtime: what the mapper (gpt_mapping/) needs to run the RTL.

``sim`` (the Verilator tool chain and build cache, running a cocotb module), ``tile_model``
(the DPI tile model of the fabric), ``fabric_host`` and ``fabric_tb`` (configuration
programs and runs played on the fabric: the host side and the player inside the simulator),
``pe_core_run``, ``pe_core_tb`` and ``pe_driver`` (one PE: programs, their player, the bench
driver). The test benches (tb/) build on it; it imports neither tb/ nor gpt_mapping/.
"""
