// A small deterministic layered layout for the topology graph (no graph library): callers on
// the left, the services they call to the right, in the spirit of Sugiyama's method reduced
// to what a namespace's handful of workloads needs. Pure: the same graph, in any order, gives
// the same picture.

export interface GraphEdge {
  from: string;
  to: string;
}

export interface LayoutOptions {
  colWidth: number;
  rowHeight: number;
  nodeWidth: number;
  nodeHeight: number;
  margin: number;
}

export interface PlacedNode {
  id: string;
  layer: number;
  /** Top-left corner. */
  x: number;
  y: number;
}

export interface PlacedEdge extends GraphEdge {
  /** From the source's right side to the target's left side (back edges: the other way round). */
  x1: number;
  y1: number;
  x2: number;
  y2: number;
  /** The edge points against the layering (a cycle, or a call to an earlier or the same layer). */
  back: boolean;
}

export interface Layout {
  nodes: PlacedNode[];
  edges: PlacedEdge[];
  width: number;
  height: number;
}

export const DEFAULT_LAYOUT: LayoutOptions = { colWidth: 310, rowHeight: 80, nodeWidth: 160, nodeHeight: 40, margin: 24 };

const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Layers by longest path from the sources, after dropping the edges that close a cycle (found
 * by a depth-first search in name order); within a layer, nodes are ordered by the mean
 * position of their callers (one sweep), ties by name.
 */
export function layout(ids: readonly string[], edges: readonly GraphEdge[], o: LayoutOptions = DEFAULT_LAYOUT): Layout {
  const nodes = [...new Set(ids)].sort(byText);
  const known = new Set(nodes);
  const uniq = new Map<string, GraphEdge>();
  for (const e of edges) if (known.has(e.from) && known.has(e.to) && e.from !== e.to) uniq.set(`${e.from}\u0000${e.to}`, { from: e.from, to: e.to });
  const all = [...uniq.values()].sort((a, b) => byText(a.from, b.from) || byText(a.to, b.to));
  const out = new Map<string, string[]>(nodes.map((n) => [n, []]));
  const indeg = new Map<string, number>(nodes.map((n) => [n, 0]));
  for (const e of all) {
    out.get(e.from)!.push(e.to);
    indeg.set(e.to, indeg.get(e.to)! + 1);
  }

  // Back edges: those reaching a node still on the DFS stack. Sources first, then the rest, by name.
  const state = new Map<string, 1 | 2>();
  const backSet = new Set<string>();
  const visit = (n: string) => {
    state.set(n, 1);
    for (const m of out.get(n)!) {
      const s = state.get(m);
      if (s === 1) backSet.add(`${n}\u0000${m}`);
      else if (s === undefined) visit(m);
    }
    state.set(n, 2);
  };
  for (const n of nodes) if (indeg.get(n) === 0 && !state.has(n)) visit(n);
  for (const n of nodes) if (!state.has(n)) visit(n);
  const dag = all.filter((e) => !backSet.has(`${e.from}\u0000${e.to}`));

  // Longest path from a source (Kahn's order over the acyclic edges).
  const layer = new Map<string, number>(nodes.map((n) => [n, 0]));
  const remaining = new Map<string, number>(nodes.map((n) => [n, 0]));
  for (const e of dag) remaining.set(e.to, remaining.get(e.to)! + 1);
  const queue = nodes.filter((n) => remaining.get(n) === 0);
  while (queue.length) {
    const n = queue.shift()!;
    for (const e of dag) {
      if (e.from !== n) continue;
      layer.set(e.to, Math.max(layer.get(e.to)!, layer.get(n)! + 1));
      remaining.set(e.to, remaining.get(e.to)! - 1);
      if (remaining.get(e.to) === 0) queue.push(e.to);
    }
  }

  const layers: string[][] = [];
  for (const n of nodes) (layers[layer.get(n)!] ??= []).push(n);
  const pos = new Map<string, number>();
  layers.forEach((l, i) => {
    if (i > 0) {
      const mean = (n: string) => {
        const callers = dag.filter((e) => e.to === n && pos.has(e.from)).map((e) => pos.get(e.from)!);
        return callers.length ? callers.reduce((a, b) => a + b, 0) / callers.length : Infinity;
      };
      const m = new Map(l.map((n) => [n, mean(n)]));
      l.sort((a, b) => m.get(a)! - m.get(b)! || byText(a, b));
    }
    l.forEach((n, k) => pos.set(n, k));
  });

  const tallest = Math.max(1, ...layers.map((l) => l.length));
  const placed = new Map<string, PlacedNode>();
  layers.forEach((l, i) => {
    const offset = ((tallest - l.length) * o.rowHeight) / 2;
    l.forEach((id, k) => placed.set(id, { id, layer: i, x: o.margin + i * o.colWidth, y: o.margin + offset + k * o.rowHeight }));
  });
  const placedEdges = all.map((e): PlacedEdge => {
    const a = placed.get(e.from)!;
    const b = placed.get(e.to)!;
    const back = b.layer <= a.layer;
    const mid = o.nodeHeight / 2;
    return back
      ? { ...e, back, x1: a.x, y1: a.y + mid, x2: b.x + o.nodeWidth, y2: b.y + mid }
      : { ...e, back, x1: a.x + o.nodeWidth, y1: a.y + mid, x2: b.x, y2: b.y + mid };
  });
  return {
    nodes: nodes.map((n) => placed.get(n)!),
    edges: placedEdges,
    width: 2 * o.margin + (Math.max(1, layers.length) - 1) * o.colWidth + o.nodeWidth,
    height: 2 * o.margin + (tallest - 1) * o.rowHeight + o.nodeHeight,
  };
}
