"""``python -m gpt_mapping <command> ...``: the mapper's command line.

Commands: ``gemm`` (:mod:`gpt_mapping.gemm_cli`) maps and runs one GEMM; ``gpt``
(:mod:`gpt_mapping.gpt_cli`) maps and runs a GPT block; ``core``
(:mod:`gpt_mapping.core_cli`) assembles a program and runs it on one PE's control core;
``train`` (:mod:`gpt_mapping.train_cli`) trains a GPT model.
Each command module has
``main(argv) -> exit code`` and is imported only when its command is used.
"""

import importlib
import sys

#: command -> (module with ``main(argv)``, one-line description)
COMMANDS = {
    "gemm": ("gpt_mapping.gemm_cli", "map, run and report one GEMM Y = X W"),
    "gpt": ("gpt_mapping.gpt_cli", "map, run and report a GPT block"),
    "core": ("gpt_mapping.core_cli", "assemble a program and run it on one PE's core"),
    "train": ("gpt_mapping.train_cli", "train a GPT model: forward, loss, backward, update"),
}


def _usage():
    lines = ["usage: python -m gpt_mapping <command> [options]", "", "commands:"]
    lines += [f"  {name:6} {about}" for name, (_, about) in COMMANDS.items()]
    lines += ["", "python -m gpt_mapping <command> --help for the command's options"]
    return "\n".join(lines)


def main(argv=None):
    """Dispatch to the command's ``main``; returns its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[command][0]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
