"""Which programs an argv finally runs, looking through wrappers, shells, interpreters and runners.

Pure: nothing here touches the disk unless the caller passes ``realname`` (see ``unwrap``).
``identity.resolve_command`` finds the programs on disk and follows their links.

Handled:

- process wrappers: ``env`` (options, ``-S``, ``VAR=val``), ``nice``, ``timeout``, ``nohup``,
  ``stdbuf``, ``ionice``, ``setsid``, ``time``;
- shells: ``sh``/``bash``/``dash``/``zsh``/``ksh -c "…"`` (every command of the string, those in
  ``$(…)`` and backticks too, with ``"$0"``/``"$@"`` taken from the arguments after it), or the
  script a shell runs;
- interpreters: ``python -m X`` and ``python script``, ``node``/``tsx``/``ts-node``/``deno run``/
  ``bun`` scripts, ``ruby``/``perl``/``php``/``lua``/``Rscript`` scripts;
- package runners: ``npx``/``npm exec``, ``pnpm dlx``/``exec``, ``yarn dlx``/``exec``, ``bunx``/
  ``bun x``, ``uvx``/``uv tool run``/``uv run``, ``pipx run``, ``poetry``/``pipenv``/``hatch run``.

Where an option's arity is unknown both readings are kept, so an unfamiliar flag cannot hide the
program behind it: every reading's program is a candidate. A program named by an expansion
(``sh -c '$CMD'``), inline code (``python -c``, ``node -e``, ``eval``) or stdin cannot be told and
is reported as ``opaque`` rather than guessed.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

__all__ = ["MAX_DEPTH", "Final", "Unwrapped", "models_in", "unwrap"]

MAX_DEPTH = 12
MAX_READINGS = 8


@dataclass(frozen=True)
class Final:
    """A program an argv may finally run: a path or command name, a Python module, or a package."""

    program: str
    # program: run by exec (a path, or a name looked up on PATH); script: a file an interpreter or
    # shell reads (a path, never a PATH lookup); module: a Python module; package: what a runner installs.
    kind: str = "program"
    args: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()  # packages a runner was told to install for it


@dataclass
class Unwrapped:
    finals: list[Final] = field(default_factory=list)
    via: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)

    def add_via(self, name: str) -> None:
        if name not in self.via:
            self.via.append(name)


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"^(python|pypy)(\d+(\.\d+)*)?[a-z]?$")
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "posh", "rbash"}
_NODES = {"node", "nodejs", "tsx", "ts-node"}
# Interpreters that run a script file: options that run inline code instead, and options taking a value.
_INTERPRETERS: dict[str, tuple[str, str]] = {
    "node": ("-e --eval -p --print", "-r --require --import --loader --experimental-loader -C --conditions --title"),
    "ruby": ("-e", "-I -r -C -E -x"),
    "perl": ("-e -E", "-I -M -m -x -C"),
    "php": ("-r -R -B -E", "-c -d -z -f"),
    "lua": ("-e", "-l"),
    "rscript": ("-e", ""),
}

RealName = Callable[[str], str | None]


@dataclass(frozen=True)
class _Spec:
    """Options of a wrapper: which take a value; unknown ones are read both ways unless ``closed``."""

    valued: frozenset[str] = frozenset()
    flags: frozenset[str] = frozenset()
    closed: bool = False


def _spec(valued: str = "", flags: str = "", closed: bool = False) -> _Spec:
    return _Spec(frozenset(valued.split()), frozenset(flags.split()), closed)


def _positions(args: Sequence[str], spec: _Spec) -> list[int]:
    """Indexes where the options of ``args`` may end (the first positional), for every reading."""
    results: set[int] = set()
    pending = [0]
    seen: set[int] = set()
    while pending and len(seen) < 64:
        i = pending.pop()
        if i in seen:
            continue
        seen.add(i)
        if i >= len(args):
            results.add(len(args))
            continue
        arg = args[i]
        if arg == "--":
            results.add(i + 1)
            continue
        if not arg.startswith("-") or arg == "-":
            results.add(i)
            continue
        if arg.startswith("--"):
            name, eq, _ = arg.partition("=")
            if eq or name in spec.flags:
                pending.append(i + 1)
            elif name in spec.valued:
                pending.append(i + 2)
            else:
                pending.append(i + 1)
                if not spec.closed:
                    pending.append(i + 2)
            continue
        # A cluster of short options: the first one that takes a value takes the rest or the next word.
        cluster = arg[1:]
        for j, char in enumerate(cluster):
            option = f"-{char}"
            if option in spec.valued:
                pending.append(i + 1 if cluster[j + 1 :] else i + 2)
                break
            if option not in spec.flags and not spec.closed:
                pending.append(i + 2 if not cluster[j + 1 :] else i + 1)
        else:
            pending.append(i + 1)
    return sorted(results)[:MAX_READINGS]


def _option_value(args: Sequence[str], end: int, names: Sequence[str]) -> list[str]:
    """Values given to options ``names`` among ``args[:end]`` (``--x v``, ``--x=v``, ``-xv``)."""
    values = []
    i = 0
    while i < end:
        arg = args[i]
        for name in names:
            if arg == name and i + 1 < len(args):
                values.append(args[i + 1])
            elif name.startswith("--") and arg.startswith(name + "="):
                values.append(arg[len(name) + 1 :])
            elif not name.startswith("--") and arg.startswith(name) and len(arg) > len(name):
                values.append(arg[len(name) :])
        i += 1
    return values


class _Walker:
    def __init__(self, realname: RealName | None) -> None:
        self.out = Unwrapped()
        self.realname = realname

    def kind_of(self, program: str) -> tuple[str, str]:
        """(handler, name) for a wrapper or interpreter, by its name as invoked or as it really is."""
        names = [PurePosixPath(program).name.lower()]
        real = self.realname(program) if self.realname else None
        if real:
            names.append(PurePosixPath(real).name.lower())
        for name in names:
            stem = name.removesuffix(".exe")
            if stem in _HANDLERS:
                return stem, stem
            if _PYTHON.match(stem):
                return "python", stem
            if stem in _SHELLS:
                return "shell", stem
            if stem in _NODES:
                return "interpreter", "node"
            if stem in _INTERPRETERS:
                return "interpreter", stem
        return "", ""

    def walk(self, argv: Sequence[str], depth: int = 0) -> None:
        if not argv:
            self.out.opaque.append("an empty command")
            return
        if depth > MAX_DEPTH:
            self.out.opaque.append(f"wrappers nested more than {MAX_DEPTH} deep")
            return
        program, args = argv[0], list(argv[1:])
        if "$" in program or "`" in program:
            self.out.opaque.append(f"{program!r} is a shell expansion")
            return
        kind, name = self.kind_of(program)
        if not kind:
            self.out.finals.append(Final(program, "program", tuple(args)))
            return
        self.out.add_via(name)
        handler = _HANDLERS.get(kind) or _FAMILY[kind]
        handler(self, name, args, depth + 1)

    def then(self, args: Sequence[str], spec: _Spec, depth: int, *, what: str = "") -> None:
        """Continue with the command after the options of ``args``, in every reading."""
        for start in _positions(args, spec):
            rest = args[start:]
            if rest:
                self.walk(rest, depth)
            elif what:
                self.out.finals.append(Final(what, "program", tuple(args)))


def _env(w: _Walker, name: str, args: list[str], depth: int) -> None:
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if arg == "-":
            i += 1
            continue
        if arg.startswith("--"):
            option, eq, value = arg.partition("=")
            if option == "--split-string":
                text = value if eq else (args[i + 1] if i + 1 < len(args) else "")
                rest = args[i + (1 if eq else 2) :]
                args, i = [*_split_words(w, text), *rest], 0
                continue
            i += 2 if option in ("--unset", "--chdir") and not eq else 1
            continue
        if arg.startswith("-"):
            cluster, step = arg[1:], 1
            for j, char in enumerate(cluster):
                if char in "uCS":
                    attached = cluster[j + 1 :]
                    value = attached or (args[i + 1] if i + 1 < len(args) else "")
                    step = 1 if attached else 2
                    if char == "S":
                        args, i, step = [*_split_words(w, value), *args[i + step :]], 0, 0
                    break
            i += step
            continue
        if _ASSIGNMENT.match(arg):
            i += 1
            continue
        break
    rest = args[i:]
    if rest:
        w.walk(rest, depth)
    else:
        w.out.finals.append(Final(name))


def _split_words(w: _Walker, text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        w.out.opaque.append(f"env -S {text!r} is not valid shell quoting")
        return []


def _nice(w: _Walker, name: str, args: list[str], depth: int) -> None:
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if arg in ("-n", "--adjustment"):
            i += 2
        elif arg.startswith(("-n", "--adjustment=")) or re.fullmatch(r"-[+-]?\d+", arg):
            i += 1
        else:
            break
    if args[i:]:
        w.walk(args[i:], depth)
    else:
        w.out.finals.append(Final(name))


_TIMEOUT = _spec("-s --signal -k --kill-after", "--preserve-status --foreground -v --verbose", closed=True)


def _timeout(w: _Walker, name: str, args: list[str], depth: int) -> None:
    for start in _positions(args, _TIMEOUT):
        rest = args[start + 1 :]  # the duration comes first
        if rest:
            w.walk(rest, depth)


_SIMPLE = {
    "nohup": _spec(closed=True),
    "stdbuf": _spec("-i -o -e --input --output --error", closed=True),
    "setsid": _spec("", "-c -f -w --ctty --fork --wait", closed=True),
    "time": _spec("-f -o --format --output", "-p -v -a -q --portability --verbose --append --quiet", closed=True),
}


def _simple(w: _Walker, name: str, args: list[str], depth: int) -> None:
    w.then(args, _SIMPLE[name], depth, what=name)


def _ionice(w: _Walker, name: str, args: list[str], depth: int) -> None:
    if any(a in ("-p", "-P", "-u", "--pid", "--pgid", "--uid") for a in args):
        w.out.finals.append(Final(name, "program", tuple(args)))  # changes another process; runs nothing
        return
    w.then(args, _spec("-c -n --class --classdata", "-t --ignore", closed=True), depth, what=name)


# -- shells

_PUNCTUATION = ";&|()<>\n"
_KEYWORDS = {"if", "then", "else", "elif", "do", "while", "until", "!", "{", "}", "fi", "done", "esac", "in"}
_NOT_COMMANDS = {"for", "case", "select", "function"}
_POSITIONAL = re.compile(r"^\$\{?([0-9@*])\}?$")


# Builtins and utilities a shell string uses around the real command (`cd x && tool | tee log`):
# they review nothing, and counting them would make any two shell commands look alike.
_UTILITIES = {
    "cd", "echo", "printf", "true", "false", ":", "exit", "export", "set", "unset", "test", "[", "read",
    "shift", "local", "return", "trap", "wait", "umask", "ulimit", "pwd", "pushd", "popd", "alias", "type",
    "hash", "cat", "tee", "sleep", "mkdir", "rm", "cp", "mv", "ls", "touch", "grep", "sed", "awk", "head",
    "tail", "sort", "uniq", "wc", "tr", "cut", "xargs", "date", "basename", "dirname", "which", "readlink",
    "realpath", "chmod", "ln", "find", "mktemp",
}  # fmt: skip


def _is_utility(w: _Walker, word: str) -> bool:
    """A utility name that really is that utility (not a link to something else on PATH)."""
    real = w.realname(word) if w.realname else None
    return real is None or PurePosixPath(real).name in _UTILITIES


def _substitutions(word: str) -> list[str]:
    """Commands inside a word's ``$(…)`` (quotes already removed by the lexer)."""
    found: list[str] = []
    start = word.find("$(")
    while start != -1:
        level, end = 0, start + 1
        while end < len(word):
            level += {"(": 1, ")": -1}.get(word[end], 0)
            if level == 0:
                break
            end += 1
        found.append(word[start + 2 : end])
        start = word.find("$(", end)
    return [f for f in found if f.strip()]


def _shell(w: _Walker, name: str, args: list[str], depth: int) -> None:
    command_mode = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or arg == "-":
            i += 1
            break
        if arg in ("--rcfile", "--init-file"):
            i += 2
            continue
        if arg.startswith("--"):
            i += 1
            continue
        if len(arg) > 1 and arg[0] in "-+":
            cluster = arg[1:]
            i += 1
            if "c" in cluster:
                command_mode = True
            if "s" in cluster:
                w.out.opaque.append(f"{name} -s reads its commands from stdin")
                return
            if "o" in cluster or "O" in cluster:
                i += 1
            continue
        break
    rest = args[i:]
    if command_mode:
        if not rest:
            w.out.opaque.append(f"{name} -c has no command string")
            return
        _shell_string(w, name, rest[0], rest[1:], depth)
    elif rest:
        w.out.finals.append(Final(rest[0], "script", tuple(rest[1:])))  # the script is the program
    else:
        w.out.opaque.append(f"{name} without -c or a script reads its commands from stdin")


def _shell_string(w: _Walker, name: str, text: str, positional: list[str], depth: int) -> None:
    # Backticks are not quotes to shlex: take their commands out first (inside single quotes too,
    # which only adds candidates).
    for inner in re.findall(r"`([^`]*)`", text):
        if inner.strip():
            _shell_string(w, name, inner, positional, depth + 1)
    text = re.sub(r"`[^`]*`", " _ ", text)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        w.out.opaque.append(f"{name} -c {text!r} is not valid shell quoting")
        return
    segments: list[list[str]] = [[]]
    skip_next = False
    for token in tokens:
        for inner in _substitutions(token):
            _shell_string(w, name, inner, positional, depth + 1)
        if skip_next:
            skip_next = False
        elif token and all(ch in _PUNCTUATION for ch in token):
            # `>`, `2>&1`, `<<`: the next word is a file, not a command; `<(` and `$(` open a command.
            if ("<" in token or ">" in token) and "(" not in token:
                skip_next = True
            else:
                segments.append([])
        else:
            segments[-1].append(token)
    for words in segments:
        while words and (_ASSIGNMENT.match(words[0]) or words[0] in _KEYWORDS):
            words = words[1:]
        if not words or words[0] in _NOT_COMMANDS:
            continue
        if words[0] == "time":
            words = [x for x in words[1:] if x != "-p"] if len(words) > 1 else words
        if words[0] == "exec":
            rest = words[1:]
            while rest and rest[0].startswith("-"):
                rest = rest[2:] if rest[0] == "-a" else rest[1:]
            words = rest
            if not words:
                continue
        if words[0] in ("command", "builtin") and len(words) > 1:
            words = words[1:]
        if words[0] in _UTILITIES and _is_utility(w, words[0]):
            continue
        if words[0] == "eval":
            w.out.opaque.append(f"{name} -c runs eval")
            continue
        if words[0] in ("source", ".") and len(words) > 1:
            w.out.finals.append(Final(words[1], "script", tuple(words[2:])))
            continue
        match = _POSITIONAL.match(words[0])
        if match:
            ref = match.group(1)
            if ref == "0":
                chosen = positional[:1] + words[1:]
            elif ref in "@*":
                chosen = positional[1:] + words[1:]
            else:
                chosen = positional[int(ref) : int(ref) + 1] + words[1:]
            if not chosen:
                w.out.opaque.append(f"{name} -c runs {words[0]} with no such argument")
                continue
            w.walk(chosen, depth)
            continue
        w.walk(words, depth)


# -- interpreters

_PYTHON_VALUED = {"W", "X"}


def _python(w: _Walker, name: str, args: list[str], depth: int) -> None:
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-":
            w.out.opaque.append(f"{name} - reads its program from stdin")
            return
        if arg.startswith("--"):
            if arg == "--check-hash-based-pycs":
                i += 2
                continue
            if arg in ("--version", "--help", "-h"):
                w.out.finals.append(Final(name, "program", tuple(args)))
                return
            i += 1
            continue
        if arg.startswith("-"):
            cluster = arg[1:]
            i += 1
            for j, char in enumerate(cluster):
                if char == "c":
                    w.out.opaque.append(f"{name} -c runs inline code")
                    return
                if char == "m":
                    module = cluster[j + 1 :] or (args[i] if i < len(args) else "")
                    rest = args[i:] if cluster[j + 1 :] else args[i + 1 :]
                    if not module:
                        w.out.opaque.append(f"{name} -m has no module")
                        return
                    if module.split(".")[0] in _HANDLERS:  # python -m uv run …
                        w.walk([module.split(".")[0], *rest], depth)
                    else:
                        w.out.finals.append(Final(module, "module", tuple(rest)))
                    return
                if char in _PYTHON_VALUED:
                    if not cluster[j + 1 :]:
                        i += 1
                    break
            continue
        w.out.finals.append(Final(arg, "script", tuple(args[i + 1 :])))
        return
    w.out.opaque.append(f"{name} without a script reads its program from stdin")


def _short_options(arg: str, valued: set[str]) -> list[str]:
    """The options of a short cluster (``-le`` → ``-l``, ``-e``), up to one that takes a value."""
    options = []
    for char in arg[1:]:
        options.append(f"-{char}")
        if f"-{char}" in valued:
            break
    return options


_NODE_FLAGS = (
    "--no-warnings --no-deprecation --inspect --inspect-brk --trace-warnings --enable-source-maps --expose-gc "
    "--experimental-vm-modules --experimental-strip-types --preserve-symlinks --use-strict"
)


def _interpreter(w: _Walker, name: str, args: list[str], depth: int) -> None:
    """node (tsx, ts-node), ruby, perl, php, lua, Rscript: options, then the script."""
    inline, valued = (set(part.split()) for part in _INTERPRETERS[name])
    spec = _spec(" ".join(inline | valued), _NODE_FLAGS if name == "node" else "")
    found = False
    for start in _positions(args, spec):
        given = [a.split("=", 1)[0] for a in args[:start] if a.startswith("--")]
        given += [o for a in args[:start] if a[:1] == "-" and a[:2] != "--" for o in _short_options(a, inline | valued)]
        code = sorted(inline & set(given))
        if code:
            w.out.opaque.append(f"{name} {code[0]} runs inline code")
            return
        rest = args[start:]
        if rest and rest[0] != "-":
            w.out.finals.append(Final(rest[0], "script", tuple(rest[1:])))
            found = True
    # A reading that leaves no script is only the wrong reading of an unknown option, unless all do.
    if not found:
        w.out.opaque.append(f"{name} without a script reads its program from stdin")


def _deno(w: _Walker, name: str, args: list[str], depth: int) -> None:
    if args[:1] == ["run"]:
        for start in _positions(args[1:], _Spec()):
            rest = args[1 + start :]
            if rest:
                w.out.finals.append(Final(rest[0], "script", tuple(rest[1:])))
        return
    w.out.finals.append(Final(name, "program", tuple(args)))


# -- package runners

_NPX = _spec(
    "-p --package -c --call --registry --cache --userconfig --prefix -w --workspace",
    "-y --yes --no --no-install --ignore-existing -q --quiet --include-workspace-root -ws --workspaces",
)


def _run_package(w: _Walker, args: list[str], spec: _Spec, depth: int, *, package_opts: Sequence[str]) -> None:
    """After a runner's options: ``-p`` packages and a command, or a package spec to run."""
    for start in _positions(args, spec):
        packages = tuple(_option_value(args, start, package_opts))
        calls = _option_value(args, start, ("-c", "--call"))
        if calls:
            _shell_string(w, "npx", calls[0], [], depth)
            continue
        rest = args[start:]
        if not rest:
            continue
        if packages:
            w.walk(rest, depth)
            w.out.finals.append(Final(rest[0], "package", tuple(rest[1:]), packages))
        else:
            w.out.finals.append(Final(rest[0], "package", tuple(rest[1:]), (rest[0],)))


def _npx(w: _Walker, name: str, args: list[str], depth: int) -> None:
    _run_package(w, args, _NPX, depth, package_opts=("-p", "--package"))


def _npm(w: _Walker, name: str, args: list[str], depth: int) -> None:
    if args[:1] in (["exec"], ["x"]):
        _run_package(w, args[1:], _NPX, depth, package_opts=("-p", "--package"))
    else:
        w.out.finals.append(Final(name, "program", tuple(args)))


_PNPM_DLX = _spec("--package --allow-build", "-c --shell-mode -s --silent")
_PNPM_GLOBAL = _spec("-C --dir -w --workspace-root --filter -F --reporter --loglevel", "-r --recursive -s --silent")


def _pnpm(w: _Walker, name: str, args: list[str], depth: int) -> None:
    for start in _positions(args, _PNPM_GLOBAL):
        command, rest = (args[start], args[start + 1 :]) if start < len(args) else ("", [])
        if command == "dlx":
            for inner in _positions(rest, _PNPM_DLX):
                packages = tuple(_option_value(rest, inner, ("--package",)))
                shell_mode = any(a in ("-c", "--shell-mode") for a in rest[:inner])
                target = rest[inner:]
                if not target:
                    continue
                if shell_mode:
                    _shell_string(w, name, " ".join(target), [], depth)
                elif packages:
                    w.walk(target, depth)
                    w.out.finals.append(Final(target[0], "package", tuple(target[1:]), packages))
                else:
                    w.out.finals.append(Final(target[0], "package", tuple(target[1:]), (target[0],)))
        elif command == "exec":
            for inner in _positions(rest, _spec("", "-c --shell-mode -r --recursive --parallel")):
                if any(a in ("-c", "--shell-mode") for a in rest[:inner]) and rest[inner:]:
                    _shell_string(w, name, " ".join(rest[inner:]), [], depth)
                elif rest[inner:]:
                    w.walk(rest[inner:], depth)
        elif command:
            # `pnpm <name>` / `pnpm run <name>` run a script or a local bin of that name: pnpm and
            # that name are both candidates.
            w.out.finals.append(Final(name, "program", tuple(args)))
            target = rest if command == "run" else [command, *rest]
            if target:
                w.out.finals.append(Final(target[0], "package", tuple(target[1:])))


def _yarn(w: _Walker, name: str, args: list[str], depth: int) -> None:
    command, rest = (args[0], args[1:]) if args else ("", [])
    if command == "dlx":
        _run_package(w, rest, _spec("-p --package", "-q --quiet"), depth, package_opts=("-p", "--package"))
    elif command == "exec" and rest:
        w.walk(rest, depth)
    elif command == "run" and rest:
        w.out.finals.append(Final(name, "program", tuple(args)))
        w.out.finals.append(Final(rest[0], "package", tuple(rest[1:])))
    elif command and not command.startswith("-"):
        w.out.finals.append(Final(name, "program", tuple(args)))
        w.out.finals.append(Final(command, "package", tuple(rest)))
    else:
        w.out.finals.append(Final(name, "program", tuple(args)))


_BUNX = _spec("-p --package", "--bun --verbose --silent --no-install")


def _bunx(w: _Walker, name: str, args: list[str], depth: int) -> None:
    _run_package(w, args, _BUNX, depth, package_opts=("-p", "--package"))


def _bun(w: _Walker, name: str, args: list[str], depth: int) -> None:
    if args[:1] == ["x"]:
        _bunx(w, name, args[1:], depth)
        return
    for start in _positions(args, _spec("", "--bun --watch --hot --smol")):
        rest = args[start:]
        if rest[:1] == ["run"]:
            rest = rest[1:]
        if rest:
            w.out.finals.append(Final(rest[0], "script", tuple(rest[1:])))


_UV_VALUED = (
    "--from --with --with-editable --with-requirements -p --python --index --default-index --index-url "
    "--extra-index-url -f --find-links -c --constraints --overrides --build-constraint --cache-dir --directory "
    "--project --config-file --color --python-preference --refresh-package --reinstall-package -P "
    "--upgrade-package --resolution --prerelease --exclude-newer --link-mode --index-strategy --keyring-provider "
    "--allow-insecure-host -C --config-setting --env-file --package --extra --group --only-group --no-group"
)
_UVX = _spec(_UV_VALUED, "--isolated -q --quiet -v --verbose --offline -n --no-cache --refresh -U --upgrade")
_UV_RUN = _spec(
    _UV_VALUED,
    "--isolated -q --quiet -v --verbose --offline -n --no-cache --frozen --locked --no-project --no-sync "
    "--all-extras --all-packages --no-dev --exact",
)


def _uvx(w: _Walker, name: str, args: list[str], depth: int) -> None:
    for start in _positions(args, _UVX):
        rest = args[start:]
        if not rest:
            continue
        packages = tuple(_option_value(args, start, ("--from",))) or (rest[0],)
        w.out.finals.append(Final(rest[0], "package", tuple(rest[1:]), packages))


def _uv(w: _Walker, name: str, args: list[str], depth: int) -> None:
    for start in _positions(args, _spec("--directory --project --cache-dir --config-file --color", "-q -v -n")):
        command, rest = args[start : start + 1], args[start + 1 :]
        if command == ["tool"] and rest[:1] == ["run"]:
            _uvx(w, name, rest[1:], depth)
        elif command == ["x"]:
            _uvx(w, name, rest, depth)
        elif command == ["run"]:
            for inner in _positions(rest, _UV_RUN):
                modules = _option_value(rest, inner, ("-m", "--module"))
                target = rest[inner:]
                if modules:
                    w.out.finals.append(Final(modules[0], "module", tuple(target)))
                elif target and target[0].endswith(".py"):
                    w.out.finals.append(Final(target[0], "script", tuple(target[1:])))
                elif target:
                    w.walk(target, depth)
        else:
            w.out.finals.append(Final(name, "program", tuple(args)))


def _pipx(w: _Walker, name: str, args: list[str], depth: int) -> None:
    if args[:1] != ["run"]:
        w.out.finals.append(Final(name, "program", tuple(args)))
        return
    rest = args[1:]
    spec = _spec("--spec --python --pip-args --index-url --backend", "--no-cache --path --pypackages -q -v")
    for start in _positions(rest, spec):
        target = rest[start:]
        if target:
            packages = tuple(_option_value(rest, start, ("--spec",))) or (target[0],)
            w.out.finals.append(Final(target[0], "package", tuple(target[1:]), packages))


def _runs_after_run(w: _Walker, name: str, args: list[str], depth: int) -> None:
    """poetry run / pipenv run / hatch run: the command after ``run``."""
    for start in _positions(args, _spec("-C --directory -P --project -e --env")):
        if args[start : start + 1] == ["run"] and args[start + 1 :]:
            w.walk(args[start + 1 :], depth)
            return
    w.out.finals.append(Final(name, "program", tuple(args)))


_HANDLERS: dict[str, Callable[[_Walker, str, list[str], int], None]] = {
    "env": _env,
    "nice": _nice,
    "timeout": _timeout,
    "nohup": _simple,
    "stdbuf": _simple,
    "setsid": _simple,
    "time": _simple,
    "ionice": _ionice,
    "npx": _npx,
    "npm": _npm,
    "pnpm": _pnpm,
    "yarn": _yarn,
    "bunx": _bunx,
    "bun": _bun,
    "deno": _deno,
    "uvx": _uvx,
    "uv": _uv,
    "pipx": _pipx,
    "poetry": _runs_after_run,
    "pipenv": _runs_after_run,
    "hatch": _runs_after_run,
}
_FAMILY: dict[str, Callable[[_Walker, str, list[str], int], None]] = {
    "python": _python,
    "shell": _shell,
    "interpreter": _interpreter,
}


def unwrap(argv: Sequence[str], realname: RealName | None = None) -> Unwrapped:
    """The programs ``argv`` may finally run, the wrappers it went through, and what cannot be told.

    ``realname`` maps a program word to the real path it runs (symlinks followed), so a wrapper
    behind a link with another name (``my-reviewer`` → ``/usr/bin/nice``) is still unwrapped.
    Pure when ``realname`` is None.
    """
    walker = _Walker(realname)
    walker.walk(list(argv))
    unique: list[Final] = []
    for final in walker.out.finals:
        if final not in unique:
            unique.append(final)
    walker.out.finals = unique
    if not unique and not walker.out.opaque:
        walker.out.opaque.append(f"{' '.join(argv)!r} names no program to run")
    return walker.out


def models_in(args: Sequence[str]) -> list[str]:
    """Models a command's own arguments name: ``--model X``, ``--model=X``, ``-m X``, ``-c model=X``."""
    models = _option_value(args, len(args), ("--model",))
    models += [args[i + 1] for i in range(len(args) - 1) if args[i] == "-m"]
    for value in _option_value(args, len(args), ("-c", "--config")):
        key, eq, model = value.partition("=")
        if eq and key.strip() == "model":
            models.append(model.strip().strip("\"'"))
    return [m for m in models if m and not m.startswith("-")]
