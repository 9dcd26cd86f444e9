"""Collectives read from a compiled program's optimized HLO text, in bytes on the wire.

``collectives(jax.jit(f).lower(*args).compile().as_text(), loop_trips=K)`` lists every
all-reduce, all-gather, all-to-all, reduce-scatter and collective-permute with its shape,
its group size and how many times it runs per call: once in the entry computation, ``K``
times inside a ``while`` body (``K`` times more per level of nesting), since the solver's
loop has a trip count that the compiler does not know.

Bytes on the wire per device follow the bandwidth-optimal (ring) algorithms, for a group
of ``n`` devices and a result of ``S`` bytes:

* all-reduce: ``2 (n - 1) / n * S`` (a reduce-scatter, then an all-gather);
* all-gather: ``(n - 1) / n * S``; reduce-scatter: ``(n - 1) * S`` (the operand is ``n S``);
* all-to-all: ``(n - 1) / n * S`` (each device keeps one of its ``n`` blocks);
* collective-permute: ``S``.

Nothing here imports jax.
"""

from __future__ import annotations

import dataclasses
import re

DTYPE_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "bf16": 2,
    "f16": 2,
    "s16": 2,
    "u16": 2,
    "f32": 4,
    "s32": 4,
    "u32": 4,
    "f64": 8,
    "s64": 8,
    "u64": 8,
}
KINDS = ("all-reduce", "all-gather", "all-to-all", "reduce-scatter", "collective-permute")

_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?[\w.\-]+ = (.+?) ([a-z\-]+)\((.*)$")
_ARRAY = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([\d,]*)\]")
_CALLED = re.compile(r"\b(?:body|condition|to_apply|calls)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_GROUPS_LIST = re.compile(r"replica_groups=\{\{([\d,]*)\}")
_GROUPS_IOTA = re.compile(r"replica_groups=\[(\d+),(\d+)\]")


@dataclasses.dataclass(frozen=True)
class Collective:
    kind: str  # one of KINDS
    shape: str  # the result type as HLO prints it
    nbytes: int  # bytes of the result
    group_size: int
    runs: int  # times per call of the program
    computation: str

    @property
    def wire_bytes(self) -> float:
        """Bytes each device sends per run (module docstring)."""
        n = self.group_size
        if n <= 1:
            return 0.0
        if self.kind == "all-reduce":
            return 2 * (n - 1) / n * self.nbytes
        if self.kind == "collective-permute":
            return float(self.nbytes)
        if self.kind == "reduce-scatter":  # the operand is n times the result
            return (n - 1) * self.nbytes
        return (n - 1) / n * self.nbytes


def _array_bytes(text: str) -> list[int]:
    sizes = []
    for dtype, dims in _ARRAY.findall(text):
        count = 1
        for d in filter(None, dims.split(",")):
            count *= int(d)
        sizes.append(count * DTYPE_BYTES[dtype])
    return sizes


def _group_size(line: str, num_devices: int) -> int:
    match = _GROUPS_LIST.search(line)
    if match:
        return len([d for d in match.group(1).split(",") if d])
    match = _GROUPS_IOTA.search(line)
    if match:
        return int(match.group(2))
    return num_devices  # replica_groups={}: every device


def collectives(hlo_text: str, *, loop_trips: int, num_devices: int) -> list[Collective]:
    """Every collective of an optimized HLO module (module docstring)."""
    bodies: dict[str, list[str]] = {}
    entry = None
    current = None
    for line in hlo_text.splitlines():
        header = _HEADER.match(line)
        if header and not line.startswith(" "):
            current = header.group(1)
            bodies[current] = []
            if line.startswith("ENTRY"):
                entry = current
        elif line.startswith("}"):
            current = None
        elif current is not None:
            bodies[current].append(line)
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")

    runs = {entry: 1}
    order = [entry]
    for name in order:  # breadth first from the entry: each computation's runs per call
        for line in bodies.get(name, ()):
            called = _CALLED.findall(line)
            for group in _BRANCHES.findall(line):
                called += [c.strip().lstrip("%") for c in group.split(",") if c.strip()]
            for callee in called:
                trips = loop_trips if " while(" in line and f"body=%{callee}" in line else 1
                if callee in bodies and callee not in runs:
                    runs[callee] = runs[name] * trips
                    order.append(callee)

    found = []
    for name, count in runs.items():
        for line in bodies[name]:
            match = _INSTRUCTION.match(line)
            if not match:
                continue
            result_type, op = match.group(1), match.group(2)
            kind = op.removesuffix("-start")
            if kind not in KINDS or op.endswith("-done"):
                continue
            sizes = _array_bytes(result_type)
            if op.endswith("-start") and kind != "all-reduce":
                sizes = sizes[len(sizes) // 2 :]  # (operands, results): the results
            found.append(
                Collective(
                    kind,
                    result_type,
                    sum(sizes),
                    _group_size(line, num_devices),
                    count,
                    name,
                )
            )
    return found


def wire_bytes_per_call(found: list[Collective]) -> float:
    """Bytes each device sends per call of the program."""
    return sum(c.wire_bytes * c.runs for c in found)
