// What an access index streams for each object it converts (a TrafficTarget, a Linkerd Server):
// the record of its accepted version; when a new version does not convert, the last good record
// stays on the agents, sent again with the reason attached (their status shows it); one never
// accepted sends nothing. Never an allow-all in its place. One line per record, sent only when it
// changed.
import type { ChangeLog } from '../util/change-log.ts';

export interface AccessSink {
  put(key: string, line: string): void;
  remove(key: string): void;
}

export interface AccessState {
  key: string;
  accepted: boolean;
  /** The agents enforce a record of it (this version's, or the last good one). */
  serving: boolean;
  problems: string[];
}

export class LastGoodRecords<R extends { problems?: string[] }> {
  readonly #good = new Map<string, R>();
  readonly #sent = new Map<string, string>();
  readonly #states = new Map<string, AccessState>();

  readonly #sink: AccessSink;
  readonly #logged: ChangeLog;
  readonly #sinkKey: (r: R) => string;

  /** `sinkKey`: the record's key in the stream ("TrafficTarget/ns/name", "Server/ns/name"). */
  constructor(sink: AccessSink, logged: ChangeLog, sinkKey: (r: R) => string) {
    this.#sink = sink;
    this.#logged = logged;
    this.#sinkKey = sinkKey;
  }

  /** How many objects have a record on the agents. */
  get serving(): number {
    return this.#good.size;
  }

  states(): AccessState[] {
    return [...this.#states.values()];
  }

  /**
   * The conversion of the object at `key`: its record, or null with `problems` saying why;
   * `neverAccepted` is what it means for the agents when no version of it ever converted.
   */
  publish(key: string, accepted: R | null, problems: readonly string[], neverAccepted: string): void {
    const all = [...problems];
    let record: R | undefined;
    if (accepted !== null) {
      record = accepted;
      this.#good.set(key, record);
    } else {
      record = this.#good.get(key);
      if (record !== undefined) {
        all.push(`${key}: the agents keep enforcing its last good version`);
        record = { ...record, problems: all.map((p) => p.slice(0, 2048)).slice(0, 16) };
      } else {
        all.push(`${key}: ${neverAccepted}`);
      }
    }
    if (record !== undefined) {
      const line = JSON.stringify({ type: 'access', op: 'set', access: record });
      if (this.#sent.get(key) !== line) {
        this.#sent.set(key, line);
        this.#sink.put(this.#sinkKey(record), line);
      }
    }
    this.#states.set(key, { key, accepted: accepted !== null, serving: this.#good.has(key), problems: all });
    this.#logged.problems(key, all);
  }

  /** The object is gone: its record leaves the agents. */
  forget(key: string): void {
    this.#good.delete(key);
    this.#states.delete(key);
    this.#logged.forget(key);
    if (this.#sent.delete(key)) this.#sink.remove(key);
  }
}
