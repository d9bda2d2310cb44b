"""Every shell command and Python snippet in README.md and docs/*.md still works.

Blocks come from pytest-codeblocks (``extract_from_file``); a block that needs a GPU, SLURM, the
network or a set-up carries ``<!--pytest.mark.skip(reason="...")-->`` on the line before its fence,
and is then only checked for syntax (``bash -n``, ``compile``; a Python block's imports still run).
A command that trains runs with the doc's own overrides plus a fixed tiny set appended
(``tiny_overrides``, one epoch, no config tree): most are composed in this process and checked by
the schema; the first command of each kind (a run, a multirun, ``--help``) runs as a real process.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_codeblocks import CodeBlock, extract_from_file

from tests.helpers import ROOT, compose, fake_job, tiny_overrides

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
# placeholders the docs write as <name>: a value that parses and composes
PLACEHOLDERS = {"date": "2024-05-01", "time": "12-00-00", "file": "last.ckpt"}
# entry point -> Hydra config name (train.py and eval.py are shims of the first two)
CONFIGS = {"train": "config", "evaluate": "eval", "predict": "predict", "export": "export"}
SCRIPTS = {"train.py": "train", "eval.py": "evaluate"}
FIXED = ["trainer.max_epochs=1", "extras.print_config=false"]
SWEEP_LIMIT = 2  # values per swept key when a multirun really runs


def _blocks() -> list[tuple[str, CodeBlock]]:
    return [
        (f"{path.relative_to(ROOT)}:{block.lineno}", block)
        for path in DOCS
        for block in extract_from_file(path)
        if block.syntax in SHELL | {"python"}
    ]


def _fill(code: str) -> str:
    return re.sub(r"<(\w+)>", lambda m: PLACEHOLDERS.get(m.group(1), m.group(1)), code)


def _commands(code: str) -> Iterator[list[str]]:
    for line in _fill(code).replace("\\\n", " ").splitlines():
        if argv := shlex.split(line, comments=True):
            yield argv


def _entry(argv: list[str]) -> tuple[str, list[str]] | None:
    """(entry point, its arguments) of a command of ours, or None."""
    if argv[0].startswith("mnistapp-"):
        name = argv[0].removeprefix("mnistapp-")
        return ("evaluate" if name == "eval" else name), argv[1:]
    if argv[0] in ("python", "python3") and len(argv) > 1:
        if argv[1] in SCRIPTS:
            return SCRIPTS[argv[1]], argv[2:]
        if argv[1] == "-m" and argv[2].startswith("mnistapp.cli."):
            return argv[2].removeprefix("mnistapp.cli."), argv[3:]
    return None


def _kind(entry: str, args: list[str]) -> str:
    """run, multirun (sweeps on the command line), search, help, cfg, or another entry point."""
    if entry != "train":
        return entry
    if "--help" in args or "--cfg" in args:
        return "help" if "--help" in args else "cfg"
    if any(a.startswith("hparams_search=") for a in args):
        return "search"
    if "-m" in args:
        return "multirun" if _swept(args) else "search"  # sweeps set in an experiment's config
    return "run"


def _swept(args: list[str]) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    return [o.key_or_group for o in overrides if o.is_sweep_override()]


BLOCKS = _blocks()


def _real_runs() -> set[tuple[str, int]]:
    """(block id, command index) of the first command of each kind that runs for real."""
    seen: set[str] = set()
    runs = set()
    for block_id, block in BLOCKS:
        if block.syntax == "python" or block.marks:
            continue
        for i, argv in enumerate(_commands(block.code)):
            entry = _entry(argv)
            kind = entry and _kind(*entry)
            if kind in ("run", "multirun", "help") and kind not in seen:
                seen.add(kind)
                runs.add((block_id, i))
    return runs


REAL_RUNS = _real_runs()


def _params(with_marks: bool) -> list:
    return [
        pytest.param(
            block_id,
            block,
            id=block_id,
            marks=[eval(m, {"pytest": pytest, "sys": sys}) for m in block.marks]
            if with_marks
            else (),
        )
        for block_id, block in BLOCKS
    ]


@pytest.mark.parametrize(("block_id", "block"), _params(with_marks=False))
def test_block_syntax(block_id: str, block: CodeBlock) -> None:
    """Every block parses; a Python block's imports work (an absent optional package skips)."""
    if block.syntax == "python":
        tree = ast.parse(block.code)
        imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        try:
            exec(compile(ast.Module(imports, []), block_id, "exec"), {})
        except ModuleNotFoundError as err:
            if err.name and err.name.split(".")[0] != "mnistapp":
                pytest.skip(f"optional package {err.name} not installed")
            raise
    else:
        proc = subprocess.run(
            ["bash", "-n"], input=_fill(block.code), capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("block_id", "block"), _params(with_marks=True))
def test_block_runs(
    block_id: str,
    block: CodeBlock,
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python blocks run in a fresh namespace; each command of a shell block runs or composes."""
    monkeypatch.chdir(tmp_path)
    if block.syntax == "python":
        exec(compile(block.code, block_id, "exec"), {"__name__": "__main__"})
        return
    for i, argv in enumerate(_commands(block.code)):
        entry = _entry(argv)
        assert entry, f"{shlex.join(argv)}: not a command of ours; mark the block with its need"
        log_dir = tmp_path / f"cmd{i}"
        if (block_id, i) in REAL_RUNS:
            _run(argv, entry, tiny_data, log_dir)
        else:
            _check(*entry, tiny_data, log_dir, monkeypatch)


def _run(argv: list[str], entry: tuple[str, list[str]], data: Path, log_dir: Path) -> None:
    """Run the command as a user would (from the repository, here in a temporary folder)."""
    name, args = entry
    limited = [_limit(a) for a in args]
    extra = [] if "--help" in args else [*tiny_overrides(data, log_dir), *FIXED]
    script = ROOT / argv[1] if argv[1].endswith(".py") else None
    cmd = (
        [sys.executable, str(script)] if script else [sys.executable, "-m", f"mnistapp.cli.{name}"]
    )
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*cmd, *limited, *extra],
        cwd=log_dir.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{shlex.join(argv)}:\n{proc.stdout}\n{proc.stderr}"
    if "--help" in args:
        assert "== Configuration groups ==" in proc.stdout, proc.stdout
        return
    records = [json.loads(p.read_text()) for p in log_dir.rglob("metrics.json")]
    jobs = 1 if "-m" not in args else SWEEP_LIMIT ** len(_swept(args))
    assert len(records) == jobs and all(r["status"] == "ok" for r in records), records


def _limit(arg: str) -> str:
    """``key=a,b,c`` -> ``key=a,b``: a real multirun runs SWEEP_LIMIT jobs per swept key."""
    if arg.startswith("-") or "," not in arg or "(" in arg or "[" in arg:
        return arg
    key, values = arg.split("=", 1)
    return f"{key}={','.join(values.split(',')[:SWEEP_LIMIT])}"


def _check(
    name: str, args: list[str], data: Path, log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compose what the command would run (each sweep at its first value) and check it."""
    from mnistapp.cli import schema

    if name == "summarize":
        from mnistapp.cli import summarize

        (sweep,) = args
        record = {"status": "ok", "params_total": 1000, "test/f1": 0.9, "test/acc": 0.9}
        fake_job(Path(sweep), 0, ["model.width=8"], record | {"val/f1_best": 0.9})
        assert summarize.main(args) == 0 and (Path(sweep) / "summary.csv").is_file()
        return
    if name == "reproduce":
        from mnistapp.cli import reproduce

        ran = []
        monkeypatch.setattr(reproduce, "run_experiment", lambda n, *a: ran.append(n) or 0)
        out = ["--root", str(log_dir / "runs"), "--out", str(log_dir / "REPRODUCTION.md")]
        assert reproduce.main([*args, *out]) == 0 and ran
        # every experiment's config composes in test_configs.py; here the first one chosen
        schema.check(compose(f"experiment={ran[0]}", *tiny_overrides(data, log_dir), *FIXED))
        return
    args = [a for a in args if a not in ("-m", "--cfg", "job", "--help")]
    for arg in args:  # the user's checkpoint the command names: the schema asks that it exists
        if arg.startswith("ckpt_path="):
            ckpt = Path(arg.partition("=")[2])
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            ckpt.touch()
    extra = [*tiny_overrides(data, log_dir), *FIXED] if name == "train" else []
    cfg = compose(*_first(args), *extra, config_name=CONFIGS[name])
    params = cfg.hydra.sweeper.get("params") or {}
    if params:  # sweeps of an experiment or a search, in its config: their first values too
        swept = [f"{k}={v}" for k, v in params.items()]
        cfg = compose(*_first(args), *_first(swept), *extra, config_name=CONFIGS[name])
    schema.check(cfg)


def _first(args: list[str]) -> list[str]:
    """Each sweep override (``a,b``, ``choice(...)``, ``interval(...)``) at its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for arg, override in zip(args, OverridesParser.create().parse_overrides(args), strict=True):
        if not override.is_sweep_override():
            out.append(arg)
        elif override.is_discrete_sweep():
            out.append(f"{override.get_key_element()}={next(override.sweep_string_iterator())}")
        else:
            out.append(f"{override.get_key_element()}={override.value().start}")
    return out
