"""The face graph: a sequence's render as a small graph of independent tasks, as plain data.

    align[k]     subject k's photo, aligned the FFHQ way
    home[k]      subject k projected from `projection.start` (the mean face), independent of every other subject
    edge[k]      subject k projected from home[k-1] (cyclic: the first subject's edge starts from the last one's
                 home), so each subject's visible optimisation still starts from the previous subject's face
    segment[k]   edge[k]'s frames, then eased in-betweens from edge[k]'s last latent to home[k] (two reconstructions of
                 the same photo): it starts on home[k-1]'s picture and ends on home[k]'s. Encoded without its first
                 frame (the previous segment's last picture), so the segments join into a loop with no closure
    assemble     loop.mp4 from the segments by stream copy, transitions, reports and the manifest

All homes can run at once, then all edges: the critical path is two projections, whatever the number of subjects.
Every task's output is stored under a key of its inputs (a home: generator weights, aligned photo, projection
settings, seed and start; an edge: the same with its home's latent as the start; a segment: its edge's key and the
output settings), so a re-render runs exactly the tasks whose key changed. A key that depends on a result not made
yet (an edge before its home) is None in a plan until then.

This module holds no torch objects, so a plan can be printed (`run.py render show.toml --plan`) or shipped to a
distributed executor; render/pipeline/chain.py computes the keys and runs the tasks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

KINDS = ("align", "home", "edge", "segment", "assemble")


@dataclass(frozen=True)
class Task:
    id: str  # "<kind>:<subject>", "<kind>:<from>--<to>" for edges and segments, "assemble"
    kind: str  # one of KINDS
    subject: str = ""  # the subject aligned, projected or encoded (an edge's or a segment's target)
    source: str = ""  # edges and segments: the subject they start from
    deps: tuple[str, ...] = ()  # ids of the tasks whose results this one needs
    key: str | None = None  # content key of the result; None until the results it depends on exist
    output: str = ""  # where the result lives, relative to the render folder
    done: bool = False  # its result exists under its key (in the render folder or the shared cache)


@dataclass
class Plan:
    """The tasks of one sequence's render, in an order that respects their dependencies."""

    sequence: str
    out: str
    tasks: list[Task] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (subject, why): left out, as the last render did

    def of(self, kind: str) -> list[Task]:
        return [t for t in self.tasks if t.kind == kind]

    def to_dict(self) -> dict:
        return {"sequence": self.sequence, "out": self.out, "tasks": [asdict(t) for t in self.tasks]}

    def text(self) -> str:
        """The plan for a person: one line per task, what it needs and whether it is done."""
        done = sum(t.done for t in self.tasks)
        lines = [f"plan of {self.sequence} -> {self.out}: {len(self.tasks)} tasks, {done} done, "
                 f"{len(self.tasks) - done} to run"]
        width = max(len(t.id) for t in self.tasks)
        for name, why in self.skipped:
            lines.append(f"  skipped {name}: as in the last render ({why})")
        for t in self.tasks:
            state = "done" if t.done else "to run"
            key = (t.key or "")[:12] or ("-" if t.done else "(pending)")
            needs = f"  after {', '.join(t.deps)}" if t.deps else ""
            out = f"  -> {t.output}" if t.output else ""
            lines.append(f"  {state:7s} {t.id:{width}s}  key {key:12s}{out}{needs}")
        return "\n".join(lines)


def neighbours(names: list[str]) -> list[tuple[str, str]]:
    """(previous, subject) for every subject, cyclic: the edges of a loop over `names`."""
    return [(names[k - 1], name) for k, name in enumerate(names)]


def edge_id(source: str, target: str) -> str:
    return f"{source}--{target}"


def derived_key(*parts, settings: dict | None = None) -> str:
    """sha256 over keys of inputs and (JSON) settings: the key of a result made from them."""
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\0")
    h.update(json.dumps(settings or {}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def plan_tasks(names: list[str], *, align_keys: dict[str, str | None], home_keys: dict[str, str | None],
               edge_keys: dict[str, str | None], segment_keys: dict[str, str | None], done: set[str],
               outputs: dict[str, str]) -> list[Task]:
    """The tasks of a loop over `names` (in loop order), given the keys known so far (by task id), the ids of the
    tasks whose results exist, and where each result lives. Homes after their aligns, edges after the home they
    start from and their own align, segments after their edge and the home they end on."""
    tasks = []
    for name in names:
        tid = f"align:{name}"
        tasks.append(Task(tid, "align", name, key=align_keys.get(tid), output=outputs.get(tid, ""),
                          done=tid in done))
    for name in names:
        tid = f"home:{name}"
        tasks.append(Task(tid, "home", name, deps=(f"align:{name}",), key=home_keys.get(tid),
                          output=outputs.get(tid, ""), done=tid in done))
    for source, target in neighbours(names):
        tid = f"edge:{edge_id(source, target)}"
        tasks.append(Task(tid, "edge", target, source, deps=(f"home:{source}", f"align:{target}"),
                          key=edge_keys.get(tid), output=outputs.get(tid, ""), done=tid in done))
    for source, target in neighbours(names):
        tid = f"segment:{edge_id(source, target)}"
        tasks.append(Task(tid, "segment", target, source, deps=(f"edge:{edge_id(source, target)}", f"home:{target}"),
                          key=segment_keys.get(tid), output=outputs.get(tid, ""), done=tid in done))
    tasks.append(Task("assemble", "assemble", deps=tuple(t.id for t in tasks if t.kind == "segment"),
                      output="loop.mp4", done="assemble" in done))
    return tasks
