/**
 * aws-local-stepfunctions 3 calls `Promise.withResolvers` (ES2024), which Node.js only has from
 * version 22; Node.js 20 is still common (and is what these machines run). This adds the standard
 * behaviour where it is missing and leaves a native one alone.
 */
interface PromiseWithResolversPolyfill {
  withResolvers?<T>(): { promise: Promise<T>; resolve: (value: T | PromiseLike<T>) => void; reject: (reason?: unknown) => void };
}

const PromiseConstructor = Promise as unknown as PromiseWithResolversPolyfill;

if (typeof PromiseConstructor.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers<T>() {
      let resolve!: (value: T | PromiseLike<T>) => void;
      let reject!: (reason?: unknown) => void;
      const promise = new Promise<T>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}

export {};
