/** A small typed event emitter: `on`, `once`, `off`, `removeAllListeners`, `emit`. */

export type Listener<Args extends unknown[]> = (...args: Args) => void;

export class Emitter<Events extends { [name: string]: unknown[] }> {
  private listeners: { [E in keyof Events]?: Array<Listener<Events[E]>> } = {};

  on<E extends keyof Events>(event: E, listener: Listener<Events[E]>): this {
    (this.listeners[event] ??= []).push(listener);
    return this;
  }

  once<E extends keyof Events>(event: E, listener: Listener<Events[E]>): this {
    const wrapped: Listener<Events[E]> = (...args) => {
      this.off(event, wrapped);
      listener(...args);
    };
    return this.on(event, wrapped);
  }

  off<E extends keyof Events>(event: E, listener: Listener<Events[E]>): this {
    this.listeners[event] = (this.listeners[event] ?? []).filter((l) => l !== listener);
    return this;
  }

  removeListener<E extends keyof Events>(event: E, listener: Listener<Events[E]>): this {
    return this.off(event, listener);
  }

  removeAllListeners(event?: keyof Events): this {
    if (event === undefined) this.listeners = {};
    else delete this.listeners[event];
    return this;
  }

  /** Call each listener; one that throws does not stop the others or the call. */
  protected emit<E extends keyof Events>(event: E, ...args: Events[E]): void {
    for (const listener of [...(this.listeners[event] ?? [])]) {
      try {
        listener(...args);
      } catch (error) {
        console.error(`backchannel: a ${String(event)} listener failed`, error);
      }
    }
  }
}
