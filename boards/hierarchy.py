"""The module hierarchy of a Verilog netlist, cut into units that synthesise on their own.

Amaranth writes one Verilog module per instance, so the eight requantisers of a PE array's rows are eight modules
with the same body under eight names. :func:`cut_design` writes each module that its :class:`CutPolicy` keeps
apart as a standalone *unit*: the module with the submodules that the policy inlines, its other submodules as
black-box stubs (the ports only), module names ``unit``, ``unit_1``, ... and escaped identifiers renumbered in
order of first appearance. Two modules whose units have the same text are the same logic, so the SHA-256 of the
unit text names what Yosys makes of it, and the unit counts as many times as its module occurs in the elaborated
design. Pairs of copies and units of modules synthesised together correct for what a boundary hides
(:class:`CutPolicy`, :class:`DesignUnit`); :func:`batch_text` puts several units in one Yosys run.

Only the Verilog that Amaranth writes is parsed here (one ``module ... endmodule`` per module, one instance per
statement starting with the module's name, one ``.port(expression)`` per line); it is no general Verilog parser.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

from shiftpu.errors import ShiftpuError

#: Name of the top module of every unit.
UNIT_TOP = "unit"


@dataclass(frozen=True)
class CutPolicy:
    """Which modules are synthesised inside their parent's unit rather than as units of their own.

    A boundary between units hides from Yosys what the flat run sees across it: a LUT that the next module's LUT
    would absorb, a register or a product that another module also computes from the same signals, a constant
    input. So a module is inlined unless keeping it apart pays: it repeats (its copies are synthesised once), or
    it is large and talks to its parent through few wires.
    """

    #: A module of at most this many bytes is always inlined: a shift-add PE is ~700 bytes of logic that Yosys
    #: packs into the LUTs of the adder it feeds.
    tiny_bytes: int = 2048
    #: A module without a copy beside it (under the same parent) of at most this many bytes is inlined.
    small_bytes: int = 96 * 1024
    #: A module without a copy beside it whose ports carry at least this many bits per KB of its Verilog is
    #: inlined, however large: the PE array and its control (thousands of port bits) lost ~2,000 LUTs of
    #: packing across their boundary on the PYNQ-Z2 default.
    dense_bits_per_kb: float = 16.0
    #: Estimate what copies beside each other share (see :func:`cut_design`).
    pairs: bool = True
    #: Units side by side (under one parent, one instance each) that read at least this many input bits from the
    #: same signals are synthesised together, as the flat run merges what they compute alike: the CONV and
    #: element-wise engines each multiply the same fields of the instruction they both read (2 of the 25 DSPs on
    #: the PYNQ-Z2 default).
    together_bits: int = 16


#: Every module a unit of its own (tests, and measuring what the policy buys).
NO_INLINING = CutPolicy(tiny_bytes=0, small_bytes=0, dense_bits_per_kb=float("inf"), pairs=False,
                        together_bits=1 << 30)

_HEADER = re.compile(r"^module\s+(\\\S+|[A-Za-z_][\w$]*)\s*([(;].*)$", re.S)
_INSTANCE = re.compile(r"^(\s*)(\\\S+|[A-Za-z_][\w$]*)(\s+(?:#\s*\(.*?\)\s*)?(?:\\\S+|[A-Za-z_][\w$]*)\s*\()")
_PORT_DECLARATION = re.compile(r"^\s*(?:input|output|inout)\b[^;]*;")
_PORT_PARTS = re.compile(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(signed\s+)?(?:\[\s*(\d+)\s*:\s*(\d+)\s*\]\s*)?"
                         r"(\\\S+|[A-Za-z_][\w$]*)\s*;")
_CONNECTION = re.compile(r"^\s*\.(\\\S+|[A-Za-z_][\w$]*)\s*\((.*)\)\s*,?\s*$")
_ESCAPED_ID = re.compile(r"\\[!-~]+")
#: A module header with a port list: ``module name (a, b, \\c );``.
_PORT_LIST = re.compile(r"^(module\s+\S+\s*)\(([^()]*)\)\s*;\s*$")
#: A port list entry that is a name only (directions declared in the body).
_PORT_NAME = re.compile(r"\s*(?:\\\S+|[A-Za-z_][\w$]*)\s*")


class HierarchyError(ShiftpuError):
    """The Verilog's module hierarchy could not be read (no such top module, a cycle, an unparsable module)."""


@dataclass(frozen=True)
class VerilogModule:
    """One ``module ... endmodule`` of a netlist: its lines and where it instantiates other modules."""

    name: str
    lines: tuple[str, ...]  #: from the ``module`` line to ``endmodule``, attributes before it left out
    instances: tuple[tuple[int, str], ...]  #: (line index, module name) of each instance of a module of the netlist

    @property
    def children(self) -> Counter[str]:
        """How many instances of each module this one holds."""
        return Counter(name for _line, name in self.instances)

    def _header(self, name: str) -> str:
        header = _HEADER.match(self.lines[0])
        assert header is not None  # split_modules only keeps modules with a header
        return f"module {name}{' ' if header.group(2)[0] == '(' else ''}{header.group(2)}"

    @property
    def _header_end(self) -> int:
        """Index of the header's last line (the first with a semicolon)."""
        return next(i for i, line in enumerate(self.lines) if ";" in line)

    def render(self, names: dict[str, str], sort_ports: bool = False) -> str:
        """The module's text with its own name and its instances' module names replaced through ``names``.

        ``sort_ports`` writes a header that lists port names only (no directions) in sorted order: their order
        matters to a parent that connects them by position, never to a top module.
        """
        lines = [self._header(names[self.name]), *self.lines[1:]]
        for index, child in self.instances:
            m = _INSTANCE.match(lines[index])
            assert m is not None  # split_modules records only lines that match
            lines[index] = f"{m.group(1)}{names[child]}{m.group(3)}{lines[index][m.end():]}"
        end = self._header_end
        ports = _PORT_LIST.match(" ".join(lines[:end + 1]))
        entries = ports.group(2).split(",") if ports else []
        if sort_ports and ports and all(_PORT_NAME.fullmatch(p) for p in entries):
            # an escaped name ends at white space, so each keeps a space before the comma that follows it
            port_names = sorted(f"{p.strip()} " for p in entries)
            lines[:end + 1] = [f"{ports.group(1)}({', '.join(port_names)});"]
        return "\n".join(lines) + "\n"

    def stub(self, name: str) -> str:
        """A black box with this module's ports under ``name``: what a parent is synthesised against."""
        end = self._header_end
        header = [self._header(name), *self.lines[1:end + 1]]
        ports = [line.strip() for line in self.lines[end + 1:] if _PORT_DECLARATION.match(line)]
        return "\n".join(["(* blackbox *)", *header, *ports, "endmodule"]) + "\n"

    @property
    def size(self) -> int:
        """Length of the module's text in bytes (near enough: characters)."""
        return sum(len(line) + 1 for line in self.lines)

    @property
    def ports(self) -> dict[str, tuple[str, str]]:
        """Direction and declaration (``signed``, range) of each port declared in the body, in order."""
        found = {}
        for line in self.lines[self._header_end + 1:]:
            m = _PORT_PARTS.match(line)
            if m:
                rng = f"[{m.group(3)}:{m.group(4)}] " if m.group(3) else ""
                found[m.group(5)] = (m.group(1), f"{m.group(2) or ''}{rng}")
        return found

    @property
    def port_bits(self) -> int:
        """Bits of all its ports."""
        total = 0
        for line in self.lines[self._header_end + 1:]:
            m = _PORT_PARTS.match(line)
            if m:
                total += abs(int(m.group(3)) - int(m.group(4))) + 1 if m.group(3) else 1
        return total

    def connections(self, index: int) -> dict[str, str] | None:
        """Port -> connected expression of the instance starting at line ``index`` (None where a connection is not
        written one per line, ``.port(expression)``, as Amaranth writes them)."""
        found: dict[str, str] = {}
        for line in self.lines[index + 1:]:
            if line.strip().startswith(");"):
                return found
            m = _CONNECTION.match(line)
            if m is None:
                return None
            found[m.group(1)] = m.group(2).strip()
        return None


def split_modules(verilog: str) -> dict[str, VerilogModule]:
    """Every module of a netlist by name, with the lines that instantiate other modules of it."""
    chunks: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in verilog.splitlines():
        if current is None:
            header = _HEADER.match(line)
            if header:
                current = [line]
                chunks.append((header.group(1), current))
        else:
            current.append(line)
            if line.strip().startswith("endmodule"):
                current = None
    if current is not None:
        raise HierarchyError(f"module {chunks[-1][0]} has no endmodule")
    names = {name for name, _ in chunks}
    if len(names) != len(chunks):
        twice = sorted(name for name, n in Counter(name for name, _ in chunks).items() if n > 1)
        raise HierarchyError(f"module(s) defined twice: {', '.join(twice)}")
    modules = {}
    for name, lines in chunks:
        instances = []
        for i, line in enumerate(lines[1:], 1):
            m = _INSTANCE.match(line)
            if m and m.group(2) in names:
                instances.append((i, m.group(2)))
        modules[name] = VerilogModule(name, tuple(lines), tuple(instances))
    return modules


def _top_name(modules: dict[str, VerilogModule], top: str) -> str:
    for name in (top, f"\\{top}"):
        if name in modules:
            return name
    raise HierarchyError(f"the Verilog has no module {top!r}")


def instance_counts(modules: dict[str, VerilogModule], top: str) -> dict[str, int]:
    """How many times each module occurs in the design elaborated from ``top`` (modules it never reaches left
    out)."""
    root = _top_name(modules, top)
    order: list[str] = []  # parents before children
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise HierarchyError(f"module {name} instantiates itself: {' -> '.join((*path, name))}")
        state[name] = 1
        for child in modules[name].children:
            visit(child, (*path, name))
        state[name] = 2
        order.append(name)

    visit(root, ())
    counts = dict.fromkeys(order, 0)
    counts[root] = 1
    for name in reversed(order):
        for child, n in modules[name].children.items():
            counts[child] += counts[name] * n
    return counts


def _renumber_escaped(text: str) -> str:
    """Escaped identifiers renamed ``\\%0``, ``\\%1``, ... in order of first appearance (a bijection, so the logic
    is unchanged; what Amaranth numbers per module, such as ``\\$auto$...$26``, then reads alike in every copy)."""
    numbers: dict[str, str] = {}
    return _ESCAPED_ID.sub(lambda m: numbers.setdefault(m.group(0), f"\\%{len(numbers)}"), text)


@dataclass(frozen=True)
class DesignUnit:
    """A distinct piece of the design, synthesised on its own: a module with the modules below it that the policy
    inlines, and its other submodules as black boxes.

    A *pair* (``pair_of`` set) is no piece of the design but a correction: two copies of unit ``pair_of`` side by
    side, sharing the inputs that their copies in the design share. Each copy beyond the first in such a group
    costs what the pair costs beyond two single copies, so the design's cells are the sum over units of ``count``
    times their cells, plus, over pairs, ``count`` times (the pair's cells less twice its unit's).
    """

    digest: str  #: SHA-256 of ``text`` (hex): equal digests are equal logic
    text: str  #: standalone Verilog, top module :data:`UNIT_TOP`
    modules: tuple[str, ...]  #: the netlist's modules that are this unit (one per instance); a pair: its group
    count: int  #: how many instances of it the design has; a pair: copies beyond the first, over all its groups
    pair_of: str | None = None  #: a pair: the digest of the unit it is two of
    together: tuple[str, ...] = ()  #: modules synthesised together with ``modules[0]`` in this unit

    @property
    def name(self) -> str:
        """A readable name: the first module's hierarchical name without the top's prefix and escape."""
        name = " + ".join(m.lstrip("\\") for m in (self.modules[0], *self.together))
        return name + (" (pair)" if self.pair_of else "")


def _unit_text(modules: dict[str, VerilogModule], name: str, inlined: set[str]) -> str:
    body: list[str] = []  # the unit's module, then the modules inlined below it, each once
    stubs: list[str] = []
    names = {name: UNIT_TOP}
    pending = [name]
    while pending:
        current = modules[pending.pop(0)]
        for child in current.children:
            if child in names:
                continue
            names[child] = f"{UNIT_TOP}_{len(names)}"
            if child in inlined:
                pending.append(child)
            else:
                stubs.append(child)
        body.append(current.name)
    text = "".join(modules[m].render(names, sort_ports=m == name) for m in body)
    return _renumber_escaped(text + "".join(modules[s].stub(names[s]) for s in stubs))


def _shapes(modules: dict[str, VerilogModule], order: list[str]) -> dict[str, str]:
    """A digest of each module's logic with everything below it, whatever the names (children before parents in
    ``order``): equal shapes are copies of one module."""
    shapes: dict[str, str] = {}
    for name in order:
        module = modules[name]
        names = {name: UNIT_TOP} | {c: f"{UNIT_TOP}_{shapes[c][:16]}" for c in module.children}
        text = _renumber_escaped(module.render(names, sort_ports=True))
        shapes[name] = hashlib.sha256(text.encode()).hexdigest()
    return shapes


def _inlined(modules: dict[str, VerilogModule], counts: dict[str, int], root: str,
             policy: CutPolicy) -> tuple[set[str], set[str]]:
    """The modules inlined into their parent's unit, and the modules with a copy under the same parent."""
    shapes = _shapes(modules, list(counts))  # instance_counts lists children before parents
    copied: set[str] = set()  # modules with a copy under the same parent
    for name in counts:
        children = modules[name].children
        per_shape: Counter[str] = Counter()
        for child, n in children.items():
            per_shape[shapes[child]] += n
        copied |= {c for c in children if per_shape[shapes[c]] > 1}
    inlined = set()
    for name in counts:
        module = modules[name]
        if name == root:
            continue
        if module.size <= policy.tiny_bytes:
            inlined.add(name)
        elif name not in copied and (module.size <= policy.small_bytes
                                     or 1024 * module.port_bits >= policy.dense_bits_per_kb * module.size):
            inlined.add(name)
    return inlined, copied


def _together_text(modules: dict[str, VerilogModule], members: list[str], wiring: list[dict[str, str | None]],
                   inlined: set[str]) -> str:
    """Instances of ``members`` under a top of their own: the ports that ``wiring`` gives one key (per member:
    port -> key, None for a port of its own) wired to one port of the top, the others each to a port of their own.
    """
    wires: dict[str, tuple[str, str]] = {}  # key -> (wire, direction and declaration) of the top's ports
    connections: list[list[str]] = []
    for i, member in enumerate(members):
        connected = []
        for k, (port, (direction, declaration)) in enumerate(modules[member].ports.items()):
            key = wiring[i].get(port)
            key = f"{i}.{k}" if key is None else f"shared {key}"
            if key not in wires:
                wires[key] = (f"w{len(wires)}", f"{direction} {declaration}")
            connected.append(f"    .{port} ({wires[key][0]})")
        connections.append(connected)
    lines = [f"module together ({', '.join(w for w, _d in wires.values())});",
             *(f"  {d}{w};" for w, d in wires.values())]
    instances = []
    for i, member in enumerate(members):
        instances.append((len(lines), member))
        lines += [f"  {member} m{i} (", *(f"{c}," for c in connections[i][:-1]), connections[i][-1], "  );"]
    lines.append("endmodule")
    key = "\\%together"  # a name no netlist module has (the unit renames it anyway)
    wrapper = VerilogModule(key, tuple(lines), tuple(instances))
    return _unit_text(modules | {key: wrapper}, key, inlined | set(members))


def _pair_text(modules: dict[str, VerilogModule], child: str, shared: frozenset[int], inlined: set[str]) -> str:
    """Two instances of ``child`` under a top of their own, its ``shared`` inputs (positions among its declared
    ports) wired to one port of the top."""
    wiring = {port: (str(k) if k in shared else None) for k, port in enumerate(modules[child].ports)}
    return _together_text(modules, [child, child], [wiring, wiring], inlined)


@dataclass(frozen=True)
class _Group:
    parent: str
    members: tuple[str, ...]  #: modules of one unit, instantiated side by side in ``parent``
    shared: frozenset[int]  #: positions (among the declared ports) of the inputs all members read from one signal


def _groups(modules: dict[str, VerilogModule], counts: dict[str, int], unit_of: dict[str, str]) -> list[_Group]:
    """Instances of one unit side by side under one parent that share some of their inputs.

    The members' texts are equal up to names, so their ports correspond by position; Amaranth numbers some port
    names per instance (``port$8547$0``, ``port$8551$0``).
    """
    found = []
    for parent in counts:
        module = modules[parent]
        by_unit: dict[str, list[tuple[int, str]]] = {}
        for index, child in module.instances:
            if child in unit_of:
                by_unit.setdefault(unit_of[child], []).append((index, child))
        for members in by_unit.values():
            if len(members) < 2:
                continue
            wiring = []  # per member: (direction, connected expression) of each declared port, in order
            for index, child in members:
                connected = module.connections(index)
                if connected is None:
                    break
                wiring.append([(d, connected.get(port)) for port, (d, _decl) in modules[child].ports.items()])
            else:
                shared = frozenset(k for k, (direction, expr) in enumerate(wiring[0])
                                   if direction == "input" and expr is not None
                                   and all(w[k] == (direction, expr) for w in wiring[1:]))
                if shared:
                    found.append(_Group(parent, tuple(c for _i, c in members), shared))
    return found


def _bits(declaration: str) -> int:
    m = re.search(r"\[(\d+):(\d+)\]", declaration)
    return abs(int(m.group(1)) - int(m.group(2))) + 1 if m else 1


def _root(group_of: dict[str, str], x: str) -> str:
    while group_of[x] != x:
        x = group_of[x]
    return x


def _together(modules: dict[str, VerilogModule], counts: dict[str, int], candidates: set[str],
              policy: CutPolicy) -> list[tuple[str, list[str], list[dict[str, str | None]]]]:
    """Sets of ``candidates`` side by side under one parent, each reading at least ``policy.together_bits`` input
    bits from signals another one reads too: (parent, members, per member: port -> the expression it shares)."""
    found = []
    for parent in counts:
        module = modules[parent]
        wired: dict[str, dict[str, str]] = {}  # member -> input port -> connected expression
        for index, child in module.instances:
            connected = module.connections(index)
            if child in candidates and counts[child] == counts[parent] and connected is not None:
                ports = modules[child].ports
                wired[child] = {p: e for p, e in connected.items() if ports.get(p, ("",))[0] == "input"}
        readers: dict[tuple[str, str], list[str]] = {}  # (expression, declaration) -> members reading it
        for child, inputs in wired.items():
            for port, expr in inputs.items():
                readers.setdefault((expr, modules[child].ports[port][1]), []).append(child)
        shared_bits: Counter[tuple[str, str]] = Counter()
        for (_expr, declaration), members in readers.items():
            for a in members:
                for b in members:
                    if a < b:
                        shared_bits[a, b] += _bits(declaration)
        # connected components of "shares enough", in the parent's order
        group_of = {child: child for child in wired}
        for (a, b), bits in shared_bits.items():
            if bits >= policy.together_bits:
                group_of[_root(group_of, b)] = _root(group_of, a)
        groups: dict[str, list[str]] = {}
        for child in wired:
            groups.setdefault(_root(group_of, child), []).append(child)
        for members in groups.values():
            if len(members) < 2:
                continue
            wiring = []
            for child in members:
                ports = modules[child].ports
                wiring.append({p: (e if len(readers[e, ports[p][1]]) > 1 else None) for p, e in wired[child].items()})
            found.append((parent, members, wiring))
    return found


@dataclass(frozen=True)
class DesignCut:
    """The units of a design and the pairs that correct for what copies side by side share."""

    units: tuple[DesignUnit, ...]  #: largest first
    pairs: tuple[DesignUnit, ...]  #: largest first

    @property
    def all(self) -> tuple[DesignUnit, ...]:
        """What is synthesised: the units, then the pairs."""
        return self.units + self.pairs


def cut_design(verilog: str, top: str, policy: CutPolicy = CutPolicy()) -> DesignCut:
    """The distinct units of the design elaborated from ``top``: each module of the design is in exactly one unit,
    as itself or inlined in its parent's (see :class:`CutPolicy`); the top is a unit, so nothing is left over.

    Where a parent holds several instances of one unit that share inputs (the requantiser of each PE row reads the
    same shift and rounding fields), the flat run builds the logic that depends on those inputs only once; a pair of
    the unit with those inputs shared measures what each further copy adds (``policy.pairs``).
    """
    modules = split_modules(verilog)
    counts = instance_counts(modules, top)
    root = _top_name(modules, top)
    inlined, copied = _inlined(modules, counts, root, policy)
    groups: dict[str, tuple[str, list[str], int, tuple[str, ...]]] = {}
    unit_of: dict[str, str] = {}

    def add(text: str, members: list[str], count: int) -> None:
        digest = hashlib.sha256(text.encode()).hexdigest()
        unit_of.update(dict.fromkeys(members, digest))
        _text, known, total, _together = groups.get(digest, (text, [], 0, tuple(members[1:])))
        groups[digest] = (text, [*known, members[0]], total + count, _together)

    together = _together(modules, counts, set(counts) - inlined - copied - {root}, policy)
    for parent, members, wiring in together:
        add(_together_text(modules, members, wiring, inlined), members, counts[parent])
    merged = {m for _parent, members, _wiring in together for m in members}
    for name, count in counts.items():
        if name not in inlined and name not in merged:
            add(_unit_text(modules, name, inlined), [name], count)
    units = [DesignUnit(digest, text, tuple(members), total, together=others)
             for digest, (text, members, total, others) in groups.items()]
    pairs: dict[str, DesignUnit] = {}
    single = {name: digest for name, digest in unit_of.items() if name not in merged}
    for group in _groups(modules, counts, single) if policy.pairs else []:
        text = _pair_text(modules, group.members[0], group.shared, inlined)
        digest = hashlib.sha256(text.encode()).hexdigest()
        weight = counts[group.parent] * (len(group.members) - 1)
        known = pairs.get(digest)
        pairs[digest] = DesignUnit(digest, text, group.members if known is None else known.modules,
                                   weight + (known.count if known else 0), pair_of=unit_of[group.members[0]])
    return DesignCut(tuple(sorted(units, key=lambda u: (-len(u.text), u.name))),
                     tuple(sorted(pairs.values(), key=lambda u: (-len(u.text), u.name))))


def design_units(verilog: str, top: str, policy: CutPolicy = CutPolicy()) -> list[DesignUnit]:
    """The units of :func:`cut_design` (without its pairs), largest first."""
    return list(cut_design(verilog, top, policy).units)


#: Top module of a batch (:func:`batch_text`).
BATCH_TOP = "batch"
_UNIT_HEADER = re.compile(rf"^module {UNIT_TOP}((?:_\d+)?)(?=[\s(;])", re.M)
_UNIT_INSTANCE = re.compile(rf"^(\s+){UNIT_TOP}((?:_\d+)?)(\s+(?:\\\S+|[A-Za-z_][\w$]*)\s*\()", re.M)


def batch_module(index: int) -> str:
    """Name of the ``index``-th unit of a batch."""
    return f"b{index}"


def batch_text(units: list[DesignUnit]) -> str:
    """Several units in one netlist for one Yosys run: unit ``i``'s modules renamed ``b<i>``, ``b<i>_1``, ...,
    its top kept as a module of its own (``keep_hierarchy``: ``-flatten`` inlines only what is inside it), and a
    top :data:`BATCH_TOP` holding one instance of each with nothing connected. Yosys then makes of each unit what
    it makes of the unit alone as its top, less the clock buffer on the top's clock input.

    Yosys reads its cell libraries for ~5 s at the start of every run; a batch pays that once.
    """
    parts = []
    for i, unit in enumerate(units):
        name = batch_module(i)

        def header(m: re.Match[str], name: str = name) -> str:
            keep = "(* keep_hierarchy *)\n" if not m.group(1) else ""
            return f"{keep}module {name}{m.group(1)}"

        text = _UNIT_HEADER.sub(header, unit.text)
        parts.append(_UNIT_INSTANCE.sub(lambda m, name=name: f"{m.group(1)}{name}{m.group(2)}{m.group(3)}", text))
    # kept: an instance with nothing connected would otherwise be removed as unused
    instances = "".join(f"  (* keep *) {batch_module(i)} u{i} ();\n" for i in range(len(units)))
    return "".join(parts) + f"module {BATCH_TOP}();\n{instances}endmodule\n"
