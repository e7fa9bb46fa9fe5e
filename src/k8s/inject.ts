// `mesh-agent inject`: adds the mesh annotations to workloads in Kubernetes YAML, editing the
// parsed document tree so comments, key order, quoting and unrelated fields survive.
import { parseAllDocuments, isAlias, isMap, isScalar, isSeq, visit, LineCounter, Schema, type Document, type DocumentOptions, type Node, type ParseOptions, type SchemaOptions } from 'yaml';
import { ANNOTATIONS, parsePorts, PORT_NAME, portNameProblem } from './annotations.ts';
import { KUBECTL_YAML } from './kubectl-yaml.ts';
import { PortSet } from '../proxy/ports.ts';

export interface InjectOptions {
  skipOutbound?: string;
  skipInbound?: string;
  opaque?: string;
}

export interface InjectedObject {
  kind: string;
  name: string;
  injected: boolean;
}

export interface InjectResult {
  output: string;
  /** How many objects received the annotations. */
  injected: number;
  /** The kind of each injected object, in input order. */
  kinds: string[];
  /** Every object seen (List items included), for the per-object summary. */
  objects: InjectedObject[];
}

/** Bad input, with the 1-based line it was found on. */
export class InjectError extends Error {
  readonly source: string;
  readonly line: number;
  constructor(source: string, line: number, message: string) {
    super(`${source}:${line}: ${message}`);
    this.source = source;
    this.line = line;
  }
}

type Path = Array<string | number>;

/** Where each kind keeps the metadata of the pods it creates, relative to the object. */
const POD_METADATA: Record<string, Path> = {
  Deployment: ['spec', 'template', 'metadata'],
  StatefulSet: ['spec', 'template', 'metadata'],
  DaemonSet: ['spec', 'template', 'metadata'],
  ReplicaSet: ['spec', 'template', 'metadata'],
  ReplicationController: ['spec', 'template', 'metadata'],
  Job: ['spec', 'template', 'metadata'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template', 'metadata'],
  // A Pod's own annotations; a Namespace's apply to every pod in it (the pod's win).
  Pod: ['metadata'],
  Namespace: ['metadata'],
};

/** Validates the flag values up front so a typo never reaches the cluster. */
export function injectAnnotations(opts: InjectOptions): Array<[string, string]> {
  const out: Array<[string, string]> = [[ANNOTATIONS.inject, 'enabled']];
  // What the agent takes (annotations.ts): skip lists go to the datapath (16 ranges), the opaque list stays in the proxy (any size).
  const add = (key: string, flag: string, value: string | undefined, inDatapath = true) => {
    if (value === undefined) return;
    try {
      if (inDatapath) out.push([key, parsePorts(value, flag).toString()]);
      else {
        // Container port names stay names: each pod's own ports give their numbers (annotations.ts).
        const tokens = value.split(',');
        for (const v of tokens) {
          const bad = portNameProblem(v);
          if (bad !== null) throw new Error(bad);
        }
        const names = [...new Set(tokens.map((v) => v.trim()).filter((v) => PORT_NAME.test(v)))];
        const numbers = tokens.filter((v) => !PORT_NAME.test(v.trim())).join(',');
        const set = numbers.trim() === '' && names.length > 0 ? '' : PortSet.parse(numbers).toString();
        out.push([key, [set, ...names].filter((v) => v !== '').join(',')]);
      }
    } catch (e) {
      const m = (e as Error).message;
      throw new Error(m.startsWith(`${flag}: `) ? m : `${flag}: ${m}`);
    }
  };
  add(ANNOTATIONS.skipOutbound, '--skip-outbound-ports', opts.skipOutbound);
  add(ANNOTATIONS.skipInbound, '--skip-inbound-ports', opts.skipInbound);
  add(ANNOTATIONS.opaque, '--opaque-ports', opts.opaque, false);
  return out;
}

export function injectYaml(text: string, opts: InjectOptions, source = '<stdin>'): InjectResult {
  const annotations = injectAnnotations(opts);
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { prettyErrors: true, lineCounter: lines, ...AS_KUBECTL_READS });
  if (!Array.isArray(docs)) return { output: text, injected: 0, kinds: [], objects: [] }; // empty stream
  for (const doc of docs) {
    const err = doc.errors[0];
    if (err) throw new InjectError(source, err.linePos?.[0].line ?? 1, firstLine(err.message));
  }
  const objects: InjectedObject[] = [];
  for (const doc of docs) {
    if (isMap(doc.contents) && doc.contents.flow) toBlockStyle(doc); // JSON in, YAML out
    injectAt(doc, [], annotations, objects, (n, message) => new InjectError(source, n.range ? lines.linePos(n.range[0]).line : 1, message));
  }
  const injectedObjects = objects.filter((o) => o.injected);
  return {
    output: docs.map((d) => d.toString({ lineWidth: 0, flowCollectionPadding: false, indentSeq: indentsSequences(text, d) })).join(''),
    injected: injectedObjects.length,
    kinds: injectedObjects.map((o) => o.kind),
    objects,
  };
}

/** An InjectError at a node's line. */
type ErrorAt = (node: Node, message: string) => InjectError;

function injectAt(doc: Document, path: Path, annotations: Array<[string, string]>, objects: InjectedObject[], errorAt: ErrorAt): void {
  const node = path.length === 0 ? doc.contents : doc.getIn(path, true);
  if (!isMap(node)) return;
  const kind = String(doc.getIn([...path, 'kind']) ?? '');
  const items = doc.getIn([...path, 'items'], true);
  if (kind.endsWith('List') && isSeq(items)) {
    for (let i = 0; i < items.items.length; i++) injectAt(doc, [...path, 'items', i], annotations, objects, errorAt);
    return;
  }
  const name = String(doc.getIn([...path, 'metadata', 'name']) ?? '');
  const target = POD_METADATA[kind];
  objects.push({ kind, name, injected: target !== undefined });
  if (!target) return;
  const annPath = [...path, ...target, 'annotations'];
  // `annotations:` with no value (or `metadata: ~`) parses as a null scalar; setIn cannot descend into it.
  for (let i = path.length + 1; i <= annPath.length; i++) {
    let at = doc.getIn(annPath.slice(0, i), true) as Node | undefined;
    if (isAlias(at)) {
      // `annotations: *ann` (kubectl takes aliases): the pod template gets a copy of its own, so
      // the anchor's other users (the workload's own metadata) stay as they were.
      const copy = at.resolve(doc)?.clone() as Node | undefined;
      if (copy) {
        visit(copy, { Node: (_, n) => void delete (n as { anchor?: string }).anchor }); // the original keeps its anchors
        doc.setIn(annPath.slice(0, i), copy);
        at = copy;
      }
    }
    if (at !== undefined && !isMap(at) && !(isScalar(at) && at.value === null)) {
      throw errorAt(at, `${kind.toLowerCase()} "${name}": ${annPath.slice(path.length, i).join('.')} is not a map`);
    }
    if (isScalar(at) && at.value === null) {
      const map = doc.createNode({});
      // `annotations: # why` keeps its comment, on the line below (the yaml printer's place for it).
      map.commentBefore = at.comment ?? at.commentBefore;
      doc.setIn(annPath.slice(0, i), map);
    }
  }
  for (const [key, value] of annotations) {
    // createNode keeps the value a string: "3306" is quoted on output, never a number.
    doc.setIn([...annPath, key], doc.createNode(value));
  }
}

/** As kubectl reads YAML (kubectl-yaml.ts), integers past 2^53 exact (they print back as written). */
const AS_KUBECTL_READS: ParseOptions & DocumentOptions & SchemaOptions = { ...KUBECTL_YAML, intAsBigInt: true };

/**
 * Strings kubectl would not read back as strings if printed plain: 1.1's `on`, `y`, `no`, `1_000`,
 * and what Go's number parsing in go-yaml takes (`0o17`, as 1.2's core schema). Timestamps and
 * base-60 numbers too: quoting them costs nothing, and other 1.1 readers take them for dates and ints.
 */
const NOT_STRINGS = [...new Schema({ schema: 'yaml-1.1' }).tags, ...new Schema({ schema: 'core' }).tags]
  .filter((tag) => Boolean(tag.default) && tag.tag !== 'tag:yaml.org,2002:str');
const readAsNonString = (s: string) => NOT_STRINGS.some((tag) => (tag as { test?: RegExp }).test?.test(s));

/** JSON parses as flow collections with quoted scalars; print it as ordinary block YAML. */
function toBlockStyle(doc: Document): void {
  visit(doc, {
    Map(_, n) {
      n.flow = n.items.length === 0;
    },
    Seq(_, n) {
      n.flow = n.items.length === 0;
    },
    Scalar(_, n) {
      // A quoted string kubectl would read as something else stays quoted; otherwise the stringifier
      // quotes again wherever a plain scalar would change type (YAML 1.2). Plain ones stay as written.
      const quoted = n.type === 'QUOTE_DOUBLE' || n.type === 'QUOTE_SINGLE';
      n.type = quoted && typeof n.value === 'string' && readAsNonString(n.value) ? 'QUOTE_DOUBLE' : undefined;
    },
  });
}

/**
 * Whether the document writes a block sequence indented under its key (`key:\n  - a`) or at the
 * key's indentation (`key:\n- a`, as kubectl get -o yaml and go-yaml print): printed back the same
 * way, so every line not touched stays as it was. The first such sequence decides.
 */
function indentsSequences(text: string, doc: Document): boolean {
  const src = doc.range ? text.slice(doc.range[0], doc.range[2]) : '';
  const m = /^( *)[^\s#-][^\n]*:[ \t]*(?:#[^\n]*)?\n(?:[ \t]*(?:#[^\n]*)?\n)*( *)- /m.exec(src);
  return m === null || m[2]!.length > m[1]!.length;
}

function firstLine(message: string): string {
  return message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
}
