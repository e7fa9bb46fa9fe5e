// Logs an object's problems when they change, not at every conversion: a resource file reloaded
// or a watch re-listed converts the same broken object again and again.
export class ChangeLog {
  readonly #said = new Map<string, string>();
  readonly #warn: (msg: string) => void;

  /** `warn` gets every line, already prefixed by its caller ("routes: ", "policy: "). */
  constructor(warn: (msg: string) => void) {
    this.#warn = warn;
  }

  /** Each of `problems` once while the list for `key` stays the same; [] says nothing and remembers that. */
  problems(key: string, problems: readonly string[]): void {
    const text = problems.join('; ');
    if ((this.#said.get(key) ?? '') === text) return;
    this.#said.set(key, text);
    for (const p of problems) this.#warn(p);
  }

  /** `msg` once while it is the last thing said for `key`. */
  once(key: string, msg: string): void {
    if (this.#said.get(key) === msg) return;
    this.#said.set(key, msg);
    this.#warn(msg);
  }

  forget(key: string): void {
    this.#said.delete(key);
  }
}
