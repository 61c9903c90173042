"""A mutable view of an ONNX graph for pattern rewrites (`convert.optimize`): who produces and who
consumes each tensor, constants, inferred ranks and shapes, new constants and names, and the
clean-up that drops dead nodes and sorts the rest."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper


class Graph:
    """Producer/consumer maps and constant lookup over a mutable node list."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.g = model.graph
        self.consts = {i.name: numpy_helper.to_array(i) for i in self.g.initializer}
        for n in self.g.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        inferred = onnx.shape_inference.infer_shapes(model)
        self.rank: dict[str, int] = {}
        self.shape: dict[str, list] = {}
        for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
            t = vi.type.tensor_type
            if t.HasField("shape"):
                self.rank[vi.name] = len(t.shape.dim)
                self.shape[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                                       for d in t.shape.dim]
        self.nodes = list(self.g.node)
        self.new_inits: list[onnx.TensorProto] = []
        self.counter = 0
        self.reindex()

    def reindex(self) -> None:
        """Rebuild the producer and consumer maps after the node list changed."""
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list] = defaultdict(list)
        for n in self.nodes:
            for i in n.input:
                self.consumers[i].append(n)

    def prod(self, name: str, op: str | None = None):
        """The node producing `name` (of type `op`, when given), or None."""
        n = self.producer.get(name)
        return n if n is not None and (op is None or n.op_type == op) else None

    def only_consumer(self, name: str, op: str):
        """The one node consuming `name` when it is of type `op` and `name` is no graph output, else None."""
        cs = self.consumers.get(name, [])
        outputs = {o.name for o in self.g.output}
        if len(cs) == 1 and cs[0].op_type == op and name not in outputs:
            return cs[0]
        return None

    def const(self, name: str) -> np.ndarray | None:
        """The constant value of `name`, or None."""
        return self.consts.get(name)

    def scalar(self, name: str) -> float | None:
        """The value of a one-element constant `name`, or None."""
        c = self.const(name)
        return float(c.ravel()[0]) if c is not None and c.size == 1 else None

    def split(self, node, known: str) -> str | None:
        """The other input of a binary node one of whose inputs is `known`."""
        if len(node.input) != 2 or known not in node.input:
            return None
        return node.input[1] if node.input[0] == known else node.input[0]

    def new_const(self, value: np.ndarray, hint: str) -> str:
        """Add a float32 initializer; return its (new) name."""
        self.counter += 1
        name = f"sixview_opt/{hint}_{self.counter}"
        self.new_inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        self.consts[name] = value
        return name

    def new_name(self, hint: str) -> str:
        """A tensor or node name not used yet."""
        self.counter += 1
        return f"sixview_opt/{hint}_{self.counter}"

    def finish(self) -> onnx.ModelProto:
        """Drop dead nodes, sort topologically, write back into the model."""
        live: set[str] = {o.name for o in self.g.output}
        keep = []
        for n in reversed(self.nodes):
            if any(o in live for o in n.output):
                keep.append(n)
                live.update(i for i in n.input if i)
        keep.reverse()
        ready = {i.name for i in self.g.input} | set(self.consts) | {""}
        ordered, pending = [], keep
        while pending:
            rest = []
            for n in pending:
                if all(i in ready for i in n.input):
                    ordered.append(n)
                    ready.update(n.output)
                else:
                    rest.append(n)
            if len(rest) == len(pending):
                raise RuntimeError("graph clean-up produced a cycle or a dangling input")
            pending = rest
        del self.g.node[:]
        self.g.node.extend(ordered)
        self.g.initializer.extend(self.new_inits)
        used = {i for n in ordered for i in n.input}
        kept = [i for i in self.g.initializer if i.name in used or i.name in {o.name for o in self.g.output}]
        del self.g.initializer[:]
        self.g.initializer.extend(kept)
        del self.g.value_info[:]  # stale after rewriting; ORT re-infers
        return self.model
