"""``scenebench --help`` stays instant: the command line loads no heavy library to build its
parser (the model, pandas, numpy, the server and the client load when a command runs)."""

import subprocess
import sys

HEAVY = ("numpy", "pandas", "scipy", "simpy", "matplotlib", "uvicorn", "httpx", "looptime")


def test_importing_the_cli_loads_nothing_heavy():
    code = (
        "import sys, runner.cli.commands\n"
        "runner.cli.commands._parser()\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"loaded at import: {out.stdout.strip()}"


def test_help_loads_nothing_heavy():
    code = (
        "import sys\nfrom runner.cli.commands import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: scenebench" in out.stdout
    assert out.stdout.strip().endswith("LOADED="), out.stdout.splitlines()[-1]


def test_every_subcommand_help_loads_nothing_heavy():
    code = (
        "import contextlib, io, sys\nfrom runner.cli.commands import _parser, main\n"
        "sub = next(a for a in _parser()._actions if a.dest == 'command')\n"
        "for name in sub.choices:\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main([name, '--help'])\n"
        f"print(len(sub.choices), ','.join(m for m in {HEAVY!r} if m in sys.modules), sep='|')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n, loaded = out.stdout.strip().split("|")
    assert int(n) >= 12 and loaded == "", out.stdout
